import CrebitosLedger
import Hummingbird
import NIOCore
import NIOHTTP1

public enum RequestLimits {
    /// Bodies are about 60 bytes; 4 KiB leaves room for extra members a client may send
    /// and refuses anything that could only be a mistake or an attack.
    public static let maximumBodySize = 4096
}

/// The challenge's two endpoints, on any ``Ledger``.
public struct LedgerController<L: Ledger>: Sendable {
    public let ledger: L

    public init(ledger: L) {
        self.ledger = ledger
    }

    public func addRoutes<Context: RequestContext>(to router: Router<Context>) {
        router.post("/clientes/:id/transacoes") { request, context in
            try await self.transact(request, context: context)
        }
        router.get("/clientes/:id/extrato") { request, context in
            try await self.statement(request, context: context)
        }
    }

    /// `POST /clientes/{id}/transacoes`
    ///
    /// Checks run in this order, each refusing before anything is written: the id's
    /// syntax (404), the media type (415), the body size (413), the JSON (400) and the
    /// payload's rules (422), the idempotency key's syntax (400); then the ledger answers
    /// 404 for an unknown client, 422 for a debit past the limit, or 200. So an unknown
    /// but well-formed id with an invalid payload gets 422: the payload is checked
    /// without touching the database.
    func transact(_ request: Request, context: some RequestContext) async throws -> Response {
        let clientID = try Self.clientID(context)
        if let contentType = request.headers[.contentType], !Self.isJSON(contentType) {
            throw APIError.unsupportedMediaType
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: RequestLimits.maximumBodySize)
        } catch is NIOTooManyBytesError {
            throw APIError.payloadTooLarge
        } catch {
            // The body stream failed: a bad chunk size, an unsupported Transfer-Encoding, a
            // body cut short before its Content-Length. The client sent broken HTTP.
            throw APIError(.badRequest, "the request body could not be read: \(Self.describeBodyError(error))")
        }
        let transaction: TransactionRequest
        do {
            transaction = try TransactionPayload.decode(Array(body.readableBytesView))
        } catch {
            switch error {
            case .notJSON(let reason): throw APIError(.badRequest, "body is not valid JSON: \(reason)")
            case .notAnObject: throw APIError(.unprocessableContent, "body must be a JSON object")
            case .invalid(let invalid): throw APIError(.unprocessableContent, invalid.message, field: invalid.field)
            }
        }
        let idempotencyKey = try Self.idempotencyKey(request)

        let receipt: TransactionReceipt
        do {
            receipt = try await ledger.apply(transaction, toClient: clientID, idempotencyKey: idempotencyKey)
        } catch {
            context.logger.error("transaction failed in the store", metadata: ["error": "\(error)"])
            throw APIError.storeUnavailable
        }
        switch receipt.outcome {
        case .applied(let balance):
            var json = JSONWriter(capacity: 48)
            json.raw("{\"limite\":")
            json.integer(balance.limit)
            json.raw(",\"saldo\":")
            json.integer(balance.balance)
            json.raw("}")
            var headers = JSONResponse.headers
            if receipt.isReplay { headers[.idempotentReplayed] = "true" }
            return JSONResponse.ok(json, headers: headers)
        case .insufficientLimit:
            throw APIError(.unprocessableContent, "insufficient limit: the debit would take saldo below -limite", field: "valor")
        case .balanceCeilingReached:
            throw APIError(
                .unprocessableContent,
                "the credit would take saldo above \(TransactionRequest.maximumAmount)", field: "valor")
        case .unknownClient:
            throw APIError.clientNotFound
        case .idempotencyKeyReused:
            throw APIError(
                .unprocessableContent,
                "Idempotency-Key was already used with a different request", field: "Idempotency-Key")
        case .idempotencyKeyInFlight:
            throw APIError(
                .conflict,
                "a request with this Idempotency-Key is being processed; retry after it answered",
                field: "Idempotency-Key")
        }
    }

    /// `GET /clientes/{id}/extrato`
    func statement(_ request: Request, context: some RequestContext) async throws -> Response {
        let clientID = try Self.clientID(context)
        let statement: AccountStatement?
        do {
            statement = try await ledger.statement(forClient: clientID)
        } catch {
            context.logger.error("statement failed in the store", metadata: ["error": "\(error)"])
            throw APIError.storeUnavailable
        }
        guard let statement else { throw APIError.clientNotFound }
        var json = JSONWriter(capacity: 160 + statement.entries.count * 110)
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
            json.raw(",\"tipo\":")
            json.string(entry.kind.rawValue)
            json.raw(",\"descricao\":")
            json.string(entry.description)
            json.raw(",\"realizada_em\":")
            json.timestamp(microseconds: entry.performedAt)
            json.raw("}")
        }
        json.raw("]}")
        return JSONResponse.ok(json)
    }

    /// A client id is 1 to 18 ASCII digits (so it fits Int64) and positive; anything
    /// else (`abc`, `-1`, `0`, `1.0`, `+1`, ` 1`, a huge number) names no client: 404.
    static func clientID(_ context: some RequestContext) throws -> Int64 {
        guard let text = context.parameters.get("id"),
              (1...18).contains(text.utf8.count),
              text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              let id = Int64(text), id > 0
        else { throw APIError.clientNotFound }
        return id
    }

    /// A short, safe description of why a body could not be read (no internals).
    static func describeBodyError(_ error: any Error) -> String {
        switch error {
        case let parserError as HTTPParserError: "malformed HTTP (\(parserError))"
        default: "the connection ended before the whole body arrived"
        }
    }

    /// `application/json`, with or without parameters such as `; charset=utf-8`.
    static func isJSON(_ contentType: String) -> Bool {
        let mediaType = contentType.split(separator: ";", maxSplits: 1).first ?? ""
        return mediaType.trimmingSpaces().lowercased() == "application/json"
    }

    static func idempotencyKey(_ request: Request) throws -> IdempotencyKey? {
        let values = request.headers[values: .idempotencyKey]
        guard !values.isEmpty else { return nil }
        guard values.count == 1, let key = IdempotencyKey(values[0]) else {
            throw APIError(
                .badRequest, "Idempotency-Key must be one header of 1 to 128 printable ASCII characters",
                field: "Idempotency-Key")
        }
        return key
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> Substring {
        var trimmed = self
        while trimmed.first == " " || trimmed.first == "\t" { trimmed = trimmed.dropFirst() }
        while trimmed.last == " " || trimmed.last == "\t" { trimmed = trimmed.dropLast() }
        return trimmed
    }
}
