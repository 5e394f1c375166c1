import CrebitosLedger
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Limits on how long a connection may take to send a request, and may sit idle.
public struct ConnectionTimeouts: Sendable {
    /// From a request's first byte to its last body byte. A client that trickles a head or
    /// a body gets a 408 and its connection is closed.
    public var requestBody: TimeAmount
    /// Between requests (and for a request's head to arrive). Longer than nginx's
    /// upstream `keepalive_timeout` (60 s), so nginx, not the instance, closes idle
    /// keep-alive connections and never writes on one the instance just closed.
    public var idle: TimeAmount

    public init(requestBody: TimeAmount = .seconds(10), idle: TimeAmount = .seconds(75)) {
        self.requestBody = requestBody
        self.idle = idle
    }
}

/// One connection: collects each request (head and body, within the size and time
/// limits), hands it to the ``APIResponder`` and writes the answer as raw HTTP/1.1 bytes.
///
/// It answers requests one at a time, in order: parts of a pipelined request that arrive
/// while an answer is pending wait in `deferred`. Everything here runs on the
/// connection's event loop; only a write's answer comes from the store's writer thread,
/// and it hops back here before it touches the connection.
final class APIChannelHandler<L: Ledger>: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer

    private enum State {
        /// Waiting for the next request's head.
        case idle
        /// Reading a request's body.
        case receiving(HTTPRequestHead, since: NIODeadline)
        /// An answer was sent early (413, 417, 408, malformed HTTP); the connection closes.
        case closing
        /// The request is with the responder.
        case responding(route: ServerMetrics.Route, isHead: Bool, since: NIODeadline)
    }

    private let responder: APIResponder<L>
    private let drain: ConnectionDrain
    private let timeouts: ConnectionTimeouts
    private let responseHeaders: ResponseHeaders
    private var state = State.idle
    private var body = ByteBuffer()
    private var keepAlive = true
    private var lastActivity = NIODeadline.now()
    private var deferred = CircularBuffer<HTTPServerRequestPart>()
    private var timer: RepeatedTask?
    private var date = HTTPDateCache()
    private let arrival: RequestArrival
    /// Set once the connection is closed or closing for good (by either side): from then on
    /// nothing queued on it runs. A debit pipelined behind a slow write must not be applied
    /// after the connection that carried it is gone, its answer going nowhere.
    private var isClosed = false

    /// Beyond this many request parts waiting behind an unanswered request, the client
    /// is not using HTTP/1.1 pipelining in good faith: the connection is closed.
    private static var maximumDeferredParts: Int { 32 }

    init(
        responder: APIResponder<L>, drain: ConnectionDrain, timeouts: ConnectionTimeouts, responseHeaders: ResponseHeaders,
        arrival: RequestArrival = RequestArrival()
    ) {
        self.responder = responder
        self.drain = drain
        self.timeouts = timeouts
        self.responseHeaders = responseHeaders
        self.arrival = arrival
    }

    // MARK: - Connection lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        body = context.channel.allocator.buffer(capacity: 256)
        // One check a second (or faster for short test timeouts) instead of a timer armed
        // and cancelled for every request: a connection carries hundreds of requests.
        let tick = TimeAmount.nanoseconds(min(1_000_000_000, timeouts.requestBody.nanoseconds / 2, timeouts.idle.nanoseconds / 2))
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in
            let (handler, context) = bound.value
            handler.checkTimeouts(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        abandonQueued()
        context.fireChannelInactive()
    }

    /// Closes the connection and drops every request part queued behind the one in flight.
    private func closeConnection(context: ChannelHandlerContext) {
        abandonQueued()
        context.close(promise: nil)
    }

    private func abandonQueued() {
        isClosed = true
        deferred.removeAll()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ShutdownEvent {
            // The server stops: an idle connection closes now, a busy one after its answer
            // (the drain flag is set, so that answer carries `Connection: close`).
            if case .idle = state { closeConnection(context: context) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func checkTimeouts(context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        switch state {
        case .receiving(_, let since) where now - since > timeouts.requestBody:
            answerEarly(.requestTimeout, context: context)
        case .idle where arrival.firstByteOfNextRequest.map({ now - $0 > timeouts.requestBody }) == true:
            // A head trickled byte by byte is bounded like a body, not by the idle timeout.
            answerEarly(.requestTimeout, context: context)
        case .idle where now - lastActivity > timeouts.idle:
            closeConnection(context: context)
        default:
            break
        }
    }

    // MARK: - Reading requests

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if isClosed { return }
        if case .responding = state {
            deferred.append(part)
            if deferred.count > Self.maximumDeferredParts { closeConnection(context: context) }
            return
        }
        handle(part, context: context)
    }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch (part, state) {
        case (.head(let head), .idle):
            startRequest(head, context: context)
        case (.body(let chunk), .receiving):
            guard body.readableBytes + chunk.readableBytes <= RequestLimits.maximumBodySize else {
                return answerEarly(.payloadTooLarge, context: context)
            }
            body.writeImmutableBuffer(chunk)
        case (.end, .receiving(let head, _)):
            dispatch(head, context: context)
        case (_, .closing):
            break  // the rest of a request already answered; the connection is closing
        default:
            // The decoder never delivers parts out of order; be safe all the same.
            answerEarly(.internalError, context: context)
        }
    }

    private func startRequest(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        arrival.firstByteOfNextRequest = nil
        keepAlive = head.isKeepAlive
        body.clear()
        state = .receiving(head, since: .now())
        if let length = head.headers.first(name: "content-length").flatMap({ Int($0) }),
           length > RequestLimits.maximumBodySize
        {
            return answerEarly(.payloadTooLarge, context: context)
        }
        if let expectation = head.headers.first(name: "expect") {
            guard expectation.lowercased() == "100-continue" else { return answerEarly(.expectationFailed, context: context) }
            var interim = context.channel.allocator.buffer(capacity: 25)
            interim.writeStaticString("HTTP/1.1 100 Continue\r\n\r\n")
            context.writeAndFlush(wrapOutboundOut(interim), promise: nil)
        }
    }

    private func dispatch(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let request = APIRequest(method: head.method, uri: head.uri, headers: head.headers, body: body)
        let route = APIResponder<L>.route(of: request)
        state = .responding(route: route, isHead: head.method == .HEAD, since: .now())
        if let metrics = responder.metrics, let waited = request.waitedSinceStamp {
            metrics.recordQueueing(route, waited: waited)
        }
        let eventLoop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: eventLoop)
        responder.respond(to: request) { response in
            if eventLoop.inEventLoop {
                let (handler, context) = bound.value
                handler.finish(response, context: context)
            } else {
                eventLoop.execute {
                    let (handler, context) = bound.value
                    handler.finish(response, context: context)
                }
            }
        }
    }

    // MARK: - Answering

    private func finish(_ response: APIResponse, context: ChannelHandlerContext) {
        guard case .responding(let route, let isHead, let since) = state else { return }
        // After a close there is nobody to answer: the write (if it was one) happened or not,
        // its client saw the connection close, and what was queued behind it was dropped.
        if !isClosed {
            write(response, close: !keepAlive || drain.isDraining, omitBody: isHead, context: context)
        }
        let close = isClosed || !keepAlive || drain.isDraining
        responder.metrics?.record(route, status: response.status, nanoseconds: (NIODeadline.now() - since).nanoseconds)
        guard !close else {
            state = .closing
            abandonQueued()
            return
        }
        state = .idle
        lastActivity = .now()
        // Bytes seen since the head were this request's body: the next request's clock
        // starts with its own first byte (one already buffered here is timed from its head).
        arrival.firstByteOfNextRequest = nil
        while case .idle = state, let next = deferred.popFirst() {
            handle(next, context: context)
        }
        while case .receiving = state, let next = deferred.popFirst() {
            handle(next, context: context)
        }
    }

    /// Answers before the request was complete (or could be read at all), then closes:
    /// the rest of what the client sends cannot be trusted to line up with a request.
    private func answerEarly(_ error: APIError, context: ChannelHandlerContext) {
        if case .closing = state { return }
        state = .closing
        abandonQueued()
        write(APIResponse(error, allocator: context.channel.allocator), close: true, omitBody: false, context: context)
    }

    private func write(_ response: APIResponse, close: Bool, omitBody: Bool, context: ChannelHandlerContext) {
        var bytes = context.channel.allocator.buffer(capacity: 192 + response.body.readableBytes)
        responseHeaders.write(response, close: close, date: &date, into: &bytes)
        if !omitBody { bytes.writeImmutableBuffer(response.body) }
        if close {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(bytes)).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch state {
        case .idle, .receiving:
            if error is HTTPParserError {
                // Broken HTTP (a bad chunk size, a request line that is not HTTP, a body
                // cut short by the end of the stream): one clean 400, then close.
                answerEarly(APIError(.badRequest, "malformed HTTP request (\(error))"), context: context)
                return
            }
            closeConnection(context: context)
        case .responding, .closing:
            closeConnection(context: context)
        }
    }
}

/// When the first byte of a request that has not become a head yet arrived, shared by a
/// connection's ``RequestArrivalHandler`` (which sees bytes) and its ``APIChannelHandler``
/// (which sees requests). Both run on the connection's event loop.
final class RequestArrival {
    var firstByteOfNextRequest: NIODeadline?
}

/// Notes when bytes arrive while no request is being read, before NIO's decoder turns them
/// into a head: so a head sent one byte at a time is timed like a body.
final class RequestArrivalHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let arrival: RequestArrival

    init(arrival: RequestArrival) {
        self.arrival = arrival
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if arrival.firstByteOfNextRequest == nil { arrival.firstByteOfNextRequest = .now() }
        context.fireChannelRead(data)
    }
}

/// Sent down every connection's pipeline when the server stops.
struct ShutdownEvent {}

/// The head of every answer, written byte by byte: `HTTP/1.1 <status>`, `Date`,
/// `Content-Type`, `x-instance`, `Content-Length`, and the optional ones.
struct ResponseHeaders: Sendable {
    private let instanceLine: [UInt8]

    init(instanceName: String) {
        instanceLine = Array("\r\nx-instance: \(instanceName)".utf8)
    }

    func write(_ response: APIResponse, close: Bool, date: inout HTTPDateCache, into buffer: inout ByteBuffer) {
        Self.writeStatusLine(response.status, into: &buffer)
        buffer.writeStaticString("\r\ndate: ")
        date.write(into: &buffer)
        switch response.contentType {
        case .json: buffer.writeStaticString("\r\ncontent-type: application/json")
        case .prometheusText: buffer.writeStaticString("\r\ncontent-type: text/plain; version=0.0.4")
        }
        buffer.writeBytes(instanceLine)
        buffer.writeStaticString("\r\ncontent-length: ")
        var digits = JSONWriter(buffer: buffer)
        digits.integer(Int64(response.body.readableBytes))
        buffer = digits.buffer
        if response.isReplay { buffer.writeStaticString("\r\nidempotent-replayed: true") }
        if response.retryAfterOneSecond { buffer.writeStaticString("\r\nretry-after: 1") }
        if close { buffer.writeStaticString("\r\nconnection: close") }
        buffer.writeStaticString("\r\n\r\n")
    }

    private static func writeStatusLine(_ status: HTTPResponseStatus, into buffer: inout ByteBuffer) {
        switch status {
        case .ok: buffer.writeStaticString("HTTP/1.1 200 OK")
        case .unprocessableEntity: buffer.writeStaticString("HTTP/1.1 422 Unprocessable Content")
        case .notFound: buffer.writeStaticString("HTTP/1.1 404 Not Found")
        case .badRequest: buffer.writeStaticString("HTTP/1.1 400 Bad Request")
        default: buffer.writeString("HTTP/1.1 \(status.code) \(status.reasonPhrase)")
        }
    }
}

/// The `Date` header's value (RFC 9110: an origin server with a clock sends one),
/// formatted once per second per connection rather than once per answer.
struct HTTPDateCache {
    private var second = -1
    private var text: [UInt8] = []

    mutating func write(into buffer: inout ByteBuffer) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let second = Int(now.tv_sec)
        if second != self.second {
            self.second = second
            text = Self.format(secondsSinceEpoch: second)
        }
        buffer.writeBytes(text)
    }

    /// `Sun, 06 Nov 1994 08:49:37 GMT` (IMF-fixdate).
    static func format(secondsSinceEpoch seconds: Int) -> [UInt8] {
        let days = Int64(seconds).quotientAndRemainderFloor(86_400)
        let (year, month, day) = Timestamp.civilDate(daysSinceEpoch: days.quotient)
        let weekday = Int((days.quotient % 7 + 11) % 7)  // 1970-01-01 was a Thursday
        let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let secondOfDay = days.remainder
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let text = "\(weekdays[weekday]), \(two(day)) \(months[Int(month) - 1]) \(year) "
            + "\(two(secondOfDay / 3600)):\(two(secondOfDay % 3600 / 60)):\(two(secondOfDay % 60)) GMT"
        return Array(text.utf8)
    }
}

extension Int64 {
    fileprivate func quotientAndRemainderFloor(_ divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        let (quotient, remainder) = quotientAndRemainder(dividingBy: divisor)
        return remainder < 0 ? (quotient - 1, remainder + divisor) : (quotient, remainder)
    }
}
