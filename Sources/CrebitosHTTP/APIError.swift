import CrebitosLedger
import NIOCore
import NIOHTTP1

/// Every answer other than a 200, with its status and a small JSON body:
/// `{"error": "<what is wrong>", "field": "<which field>"}` (`field` only when there is one),
/// and for a write that failed in the store, what became of it:
/// `{"error": ..., "outcome": "not_written", "reason": "deadline_exceeded"}` or
/// `{"error": ..., "outcome": "unknown"}` (docs/API.md, "When a write fails").
public struct APIError: Error, Equatable, Sendable {
    public let status: HTTPResponseStatus
    public let message: String
    public let field: String?
    /// For a write the store could not complete: whether it was stored.
    public let outcome: WriteOutcome?

    /// What a client may do after a failed write, decided by a program, not by reading prose.
    public enum WriteOutcome: Equatable, Sendable {
        /// Nothing was stored: the request may be sent again as it is, with or without its key.
        case notWritten(reason: String)
        /// The commit may or may not have reached the disk: only a retry with the same
        /// Idempotency-Key is safe (it replays the stored answer or applies it once).
        case unknown
    }

    public init(_ status: HTTPResponseStatus, _ message: String, field: String? = nil, outcome: WriteOutcome? = nil) {
        self.status = status
        self.message = message
        self.field = field
        self.outcome = outcome
    }

    /// The JSON body of this error.
    func body(allocator: ByteBufferAllocator) -> ByteBuffer {
        var json = JSONWriter(buffer: allocator.buffer(capacity: 96 + message.utf8.count))
        json.raw("{\"error\":")
        json.string(message)
        if let field {
            json.raw(",\"field\":")
            json.string(field)
        }
        switch outcome {
        case .notWritten(let reason):
            json.raw(",\"outcome\":\"not_written\",\"reason\":")
            json.string(reason)
        case .unknown:
            json.raw(",\"outcome\":\"unknown\"")
        case nil:
            break
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
    static let idempotencyKeyMalformed = APIError(
        .badRequest, "Idempotency-Key must be one header of 1 to 128 printable ASCII characters", field: "Idempotency-Key")
    /// The write was refused or rolled back: the money did not move. 503, the one status
    /// that means "not stored" (with `Retry-After`): a client may resend the request as it is.
    static func notWritten(_ reason: LedgerUnavailable.Reason) -> APIError {
        APIError(.serviceUnavailable, "nothing was stored (\(reason)); try again", outcome: .notWritten(reason: reason.code))
    }
    /// The commit's result is unknown: only a retry with the same Idempotency-Key is safe.
    /// 500, not 503: a client (or a library) that retries every 503 must not resend this one
    /// without its key. Like nginx's own 502 and 504, it says "may or may not be stored".
    static let outcomeUnknown = APIError(
        .internalServerError,
        "the outcome is unknown: the transaction may or may not be stored; retrying with the same Idempotency-Key is safe",
        outcome: .unknown)
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

extension LedgerUnavailable.Reason {
    /// The `reason` of a "not_written" answer: stable words for programs.
    var code: String {
        switch self {
        case .deadlineExceeded: "deadline_exceeded"
        case .queueFull: "queue_full"
        case .transactionFailed: "transaction_failed"
        case .shuttingDown: "shutting_down"
        }
    }
}
