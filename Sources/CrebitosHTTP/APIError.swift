import CrebitosLedger
import NIOCore
import NIOHTTP1

/// Every answer other than a 200, with its status and a small JSON body:
/// `{"error": "<what is wrong>", "field": "<which field>"}` (`field` only when there is one).
public struct APIError: Error, Equatable, Sendable {
    public let status: HTTPResponseStatus
    public let message: String
    public let field: String?

    public init(_ status: HTTPResponseStatus, _ message: String, field: String? = nil) {
        self.status = status
        self.message = message
        self.field = field
    }

    /// The JSON body of this error.
    func body(allocator: ByteBufferAllocator) -> ByteBuffer {
        var json = JSONWriter(buffer: allocator.buffer(capacity: 48 + message.utf8.count))
        json.raw("{\"error\":")
        json.string(message)
        if let field {
            json.raw(",\"field\":")
            json.string(field)
        }
        json.raw("}")
        return json.buffer
    }
}

extension APIError {
    static let clientNotFound = APIError(.notFound, "client not found")
    static let noSuchRoute = APIError(.notFound, "no such route")
    static let payloadTooLarge = APIError(.payloadTooLarge, "request body is larger than \(RequestLimits.maximumBodySize) bytes")
    static let unsupportedMediaType = APIError(.unsupportedMediaType, "Content-Type must be application/json")
    static let insufficientLimit = APIError(
        .unprocessableEntity, "insufficient limit: the debit would take saldo below -limite", field: "valor")
    static let balanceCeiling = APIError(
        .unprocessableEntity, "the credit would take saldo above \(TransactionRequest.maximumAmount)", field: "valor")
    static let idempotencyKeyReused = APIError(
        .unprocessableEntity, "Idempotency-Key was already used with a different request", field: "Idempotency-Key")
    static let idempotencyKeyInFlight = APIError(
        .conflict, "a request with this Idempotency-Key is being processed; retry once it has been answered",
        field: "Idempotency-Key")
    static let idempotencyKeyMalformed = APIError(
        .badRequest, "Idempotency-Key must be one header of 1 to 128 printable ASCII characters", field: "Idempotency-Key")
    /// The write was refused or rolled back: the money did not move.
    static func notWritten(_ reason: String) -> APIError {
        APIError(.serviceUnavailable, "nothing was stored (\(reason)); try again")
    }
    /// The commit's result is unknown: only a retry with the same Idempotency-Key is safe.
    static let outcomeUnknown = APIError(
        .serviceUnavailable,
        "the outcome is unknown: the transaction may or may not be stored; retrying with the same Idempotency-Key is safe")
    static let statementUnavailable = APIError(.serviceUnavailable, "the ledger is temporarily unavailable; try again")
    static let requestTimeout = APIError(.requestTimeout, "the request did not arrive in time")
    static let expectationFailed = APIError(.expectationFailed, "only Expect: 100-continue is supported")
    static let internalError = APIError(.internalServerError, "internal error")
}

public enum RequestLimits {
    /// Bodies are about 60 bytes; 4 KiB leaves room for extra members a client may send
    /// and refuses anything that could only be a mistake or an attack.
    public static let maximumBodySize = 4096
}
