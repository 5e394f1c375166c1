import NIOCore
import NIOHTTP1

/// A request as the API sees it once its head and whole body have arrived.
public struct APIRequest: Sendable {
    public var method: HTTPMethod
    /// The request target as sent (`/clientes/1/extrato?x=1`).
    public var uri: String
    public var headers: HTTPHeaders
    public var body: ByteBuffer
    /// How long ago the load balancer stamped the request (`X-Request-Start`), read once when
    /// the request is made; nil without a usable stamp. The write deadline counts from it, and
    /// the queueing metric records it.
    public let waitedSinceStamp: Duration?

    public init(method: HTTPMethod, uri: String, headers: HTTPHeaders = [:], body: ByteBuffer = ByteBuffer()) {
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
        waitedSinceStamp = RequestStart.waitedIfStamped(headers)
    }

    /// The path without its query string.
    var path: Substring {
        let target = uri[...]
        return target.firstIndex(of: "?").map { target[..<$0] } ?? target
    }
}

/// An answer: its status, its JSON body, and the few headers the API adds to some answers.
public struct APIResponse: Sendable {
    public var status: HTTPResponseStatus
    public var body: ByteBuffer
    /// `Idempotent-Replayed: true`: the recorded answer to an earlier request with the
    /// same Idempotency-Key; nothing was written now.
    public var isReplay = false
    /// `Content-Type`; JSON except for the Prometheus page.
    public var contentType: ContentType = .json

    public enum ContentType: Sendable {
        case json
        case prometheusText
    }

    public init(status: HTTPResponseStatus, body: ByteBuffer, isReplay: Bool = false, contentType: ContentType = .json) {
        self.status = status
        self.body = body
        self.isReplay = isReplay
        self.contentType = contentType
    }

    /// `Retry-After: 1`: sent with every answer a client may retry (503, and the 500 of an
    /// unknown outcome, which it may retry with the same Idempotency-Key).
    public var retryAfterOneSecond = false

    init(_ error: APIError, allocator: ByteBufferAllocator) {
        self.init(status: error.status, body: error.body(allocator: allocator))
        retryAfterOneSecond = error.status == .serviceUnavailable || error.outcome != nil
    }
}
