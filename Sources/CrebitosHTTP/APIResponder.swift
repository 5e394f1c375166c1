import CrebitosLedger
import Logging
import NIOCore
import NIOHTTP1

/// The API itself: routes a whole request to its endpoint and produces the answer.
/// Knows nothing of connections or sockets (``APIChannelHandler`` does), so that the
/// benchmarks can run a whole request in-process.
///
/// Routes: `POST /clientes/{id}/transacoes`, `GET /clientes/{id}/extrato`, `GET /health`
/// and, when metrics are on, `GET /metrics`. Anything else, a wrong method included, is
/// a 404 with the JSON error shape.
public struct APIResponder<L: Ledger>: Sendable {
    public let ledger: L
    public let instanceName: String
    let metrics: ServerMetrics?
    let logger: Logger
    private let allocator = ByteBufferAllocator()

    public init(ledger: L, instanceName: String, metrics: ServerMetrics? = nil, logger: Logger = Logger(label: "crebitos")) {
        self.ledger = ledger
        self.instanceName = instanceName
        self.metrics = metrics
        self.logger = logger
    }

    /// Answers `request`. `answer` is called exactly once: before this returns for
    /// everything but a write, and on the store's writer thread for a write.
    public func respond(to request: APIRequest, _ answer: @escaping @Sendable (APIResponse) -> Void) {
        let path = request.path
        if let rest = path.dropPrefix("/clientes/") {
            guard let slash = rest.firstIndex(of: "/") else { return answer(error(.noSuchRoute)) }
            let id = rest[..<slash]
            switch (request.method, rest[rest.index(after: slash)...]) {
            case (.POST, "transacoes"):
                return transact(clientID: id, request, answer)
            case (.GET, "extrato"):
                return statement(clientID: id, answer)
            default:
                return answer(error(.noSuchRoute))
            }
        }
        switch (request.method, path) {
        case (.GET, "/health"): answer(health())
        case (.GET, "/metrics") where metrics != nil: answer(metricsPage())
        default: answer(error(.noSuchRoute))
        }
    }

    static func route(of request: APIRequest) -> ServerMetrics.Route {
        let path = request.path
        if path.hasPrefix("/clientes/") {
            if path.hasSuffix("/transacoes") { return .transaction }
            if path.hasSuffix("/extrato") { return .statement }
        }
        switch path {
        case "/health": return .health
        case "/metrics": return .metrics
        default: return .other
        }
    }

    // MARK: - POST /clientes/{id}/transacoes

    /// Checks run in this order, each refusing before anything is written: the id's
    /// syntax (404), the media type (415), the JSON (400) and the payload's rules (422),
    /// the idempotency key's syntax (400); then the ledger answers 404 for an unknown
    /// client, 422 for a debit past the limit, or 200. So an unknown but well-formed id
    /// with an invalid payload gets 422: the payload is checked without the database.
    /// (The body's size, 413, is checked by the connection while it arrives.)
    private func transact(clientID text: Substring, _ request: APIRequest, _ answer: @escaping @Sendable (APIResponse) -> Void) {
        guard let clientID = Self.clientID(text) else { return answer(error(.clientNotFound)) }
        // A missing Content-Type is accepted; two of them (even one JSON) are ambiguous.
        let contentTypes = request.headers["content-type"]
        if contentTypes.count > 1 || contentTypes.first.map({ !Self.isJSON($0) }) == true {
            return answer(error(.unsupportedMediaType))
        }
        let transaction: TransactionRequest
        do {
            transaction = try TransactionPayload.decode(Array(request.body.readableBytesView))
        } catch {
            switch error {
            case .notJSON(let reason): return answer(self.error(APIError(.badRequest, "body is not valid JSON: \(reason)")))
            case .notAnObject: return answer(self.error(APIError(.unprocessableEntity, "body must be a JSON object")))
            case .invalid(let invalid):
                return answer(self.error(APIError(.unprocessableEntity, invalid.message, field: invalid.field)))
            }
        }
        let keys = request.headers["idempotency-key"]
        var idempotencyKey: IdempotencyKey?
        if !keys.isEmpty {
            guard keys.count == 1, let key = IdempotencyKey(keys[0]) else { return answer(error(.idempotencyKeyMalformed)) }
            idempotencyKey = key
        }
        let allocator = allocator
        let logger = logger
        let alreadyWaited = request.waitedSinceStamp ?? .zero
        ledger.apply(transaction, toClient: clientID, idempotencyKey: idempotencyKey, alreadyWaited: alreadyWaited) { result in
            answer(Self.transactionAnswer(result, allocator: allocator, logger: logger))
        }
    }

    private static func transactionAnswer(
        _ result: Result<TransactionReceipt, any Error>, allocator: ByteBufferAllocator, logger: Logger
    ) -> APIResponse {
        let receipt: TransactionReceipt
        switch result {
        case .success(let success):
            receipt = success
        case .failure(LedgerUnavailable.notWritten(let reason)):
            return APIResponse(.notWritten(reason), allocator: allocator)
        case .failure(LedgerUnavailable.outcomeUnknown):
            logger.error("a commit failed with an unknown outcome")
            return APIResponse(.outcomeUnknown, allocator: allocator)
        case .failure(let error):
            // A store that throws anything else makes no promise about what it stored.
            logger.error("transaction failed in the store", metadata: ["error": "\(error)"])
            return APIResponse(.outcomeUnknown, allocator: allocator)
        }
        switch receipt.outcome {
        case .applied(let balance):
            return APIResponse(status: .ok, body: transactionJSON(balance, allocator: allocator), isReplay: receipt.isReplay)
        case .insufficientLimit: return APIResponse(.insufficientLimit, allocator: allocator)
        case .balanceCeilingReached: return APIResponse(.balanceCeiling, allocator: allocator)
        case .unknownClient: return APIResponse(.clientNotFound, allocator: allocator)
        case .idempotencyKeyReused: return APIResponse(.idempotencyKeyReused, allocator: allocator)
        }
    }

    /// The body of a 200 to a transaction. Public, like ``statementJSON(_:allocator:)``,
    /// for the encode benchmark (Benchmarks/).
    public static func transactionJSON(_ balance: Balance, allocator: ByteBufferAllocator) -> ByteBuffer {
        var json = JSONWriter(buffer: allocator.buffer(capacity: 48))
        json.raw("{\"limite\":")
        json.integer(balance.limit)
        json.raw(",\"saldo\":")
        json.integer(balance.balance)
        json.raw("}")
        return json.buffer
    }

    // MARK: - GET /clientes/{id}/extrato

    private func statement(clientID text: Substring, _ answer: @escaping @Sendable (APIResponse) -> Void) {
        guard let clientID = Self.clientID(text) else { return answer(error(.clientNotFound)) }
        let allocator = allocator
        let logger = logger
        ledger.statement(forClient: clientID) { result in
            switch result {
            case .success(let statement?):
                answer(APIResponse(status: .ok, body: Self.statementJSON(statement, allocator: allocator)))
            case .success(nil):
                answer(APIResponse(.clientNotFound, allocator: allocator))
            case .failure(let error):
                logger.error("statement failed in the store", metadata: ["error": "\(error)"])
                answer(APIResponse(.statementUnavailable, allocator: allocator))
            }
        }
    }

    public static func statementJSON(_ statement: AccountStatement, allocator: ByteBufferAllocator) -> ByteBuffer {
        var json = JSONWriter(buffer: allocator.buffer(capacity: 128 + statement.entries.count * 100))
        json.raw("{\"saldo\":{\"total\":")
        json.integer(statement.balance.balance)
        json.raw(",\"data_extrato\":")
        json.timestamp(microseconds: statement.takenAt)
        json.raw(",\"limite\":")
        json.integer(statement.balance.limit)
        json.raw("},\"ultimas_transacoes\":[")
        for (position, entry) in statement.entries.enumerated() {
            if position > 0 { json.raw(",") }
            json.raw("{\"valor\":")
            json.integer(entry.amount)
            json.raw(entry.kind == .credit ? ",\"tipo\":\"c\",\"descricao\":" : ",\"tipo\":\"d\",\"descricao\":")
            json.string(entry.description)
            json.raw(",\"realizada_em\":")
            json.timestamp(microseconds: entry.performedAt)
            json.raw("}")
        }
        json.raw("]}")
        return json.buffer
    }

    // MARK: - GET /health, GET /metrics

    /// Answers once the process serves, which is only after its database was opened and
    /// migrated. For the load balancer's and the orchestrator's checks.
    private func health() -> APIResponse {
        var json = JSONWriter(buffer: allocator.buffer(capacity: 48 + instanceName.utf8.count))
        json.raw("{\"status\":\"ok\",\"instance\":")
        json.string(instanceName)
        json.raw("}")
        return APIResponse(status: .ok, body: json.buffer)
    }

    private func metricsPage() -> APIResponse {
        let page = metrics?.renderPage() ?? []
        var buffer = allocator.buffer(capacity: page.count)
        buffer.writeBytes(page)
        return APIResponse(status: .ok, body: buffer, contentType: .prometheusText)
    }

    // MARK: - Helpers

    private func error(_ error: APIError) -> APIResponse {
        APIResponse(error, allocator: allocator)
    }

    /// A client id is 1 to 18 ASCII digits (so it fits Int64) and positive; anything
    /// else (`abc`, `-1`, `0`, `1.0`, `+1`, `%31`, a huge number) names no client: 404.
    static func clientID(_ text: Substring) -> Int64? {
        guard (1...18).contains(text.utf8.count) else { return nil }
        var id: Int64 = 0
        for byte in text.utf8 {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            id = id * 10 + Int64(byte - UInt8(ascii: "0"))
        }
        return id > 0 ? id : nil
    }

    /// `application/json`, with or without parameters such as `; charset=utf-8`.
    static func isJSON(_ contentType: String) -> Bool {
        let mediaType = contentType.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return mediaType.trimmingSpaces().lowercased() == "application/json"
    }
}

extension Substring {
    fileprivate func dropPrefix(_ prefix: String) -> Substring? {
        hasPrefix(prefix) ? dropFirst(prefix.count) : nil
    }

    fileprivate func trimmingSpaces() -> Substring {
        var trimmed = self
        while trimmed.first == " " || trimmed.first == "\t" { trimmed = trimmed.dropFirst() }
        while trimmed.last == " " || trimmed.last == "\t" { trimmed = trimmed.dropLast() }
        return trimmed
    }
}
