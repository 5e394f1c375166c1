import Hummingbird

/// Every answer other than a 200, with its status and a small JSON body:
/// `{"error": "<what is wrong>", "field": "<which field>"}` (`field` only when there is one).
public struct APIError: HTTPResponseError, Equatable {
    public let status: HTTPResponse.Status
    public let message: String
    public let field: String?

    public init(_ status: HTTPResponse.Status, _ message: String, field: String? = nil) {
        self.status = status
        self.message = message
        self.field = field
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var json = JSONWriter(capacity: 64 + message.utf8.count)
        json.raw("{\"error\":")
        json.string(message)
        if let field {
            json.raw(",\"field\":")
            json.string(field)
        }
        json.raw("}")
        return Response(status: status, headers: JSONResponse.headers, body: ResponseBody(byteBuffer: json.buffer))
    }
}

extension APIError {
    static let clientNotFound = APIError(.notFound, "client not found")
    static let payloadTooLarge = APIError(.contentTooLarge, "request body is larger than \(RequestLimits.maximumBodySize) bytes")
    static let unsupportedMediaType = APIError(.unsupportedMediaType, "Content-Type must be application/json")
    static let storeUnavailable = APIError(.serviceUnavailable, "the ledger is temporarily unavailable; nothing was stored, try again")
}
