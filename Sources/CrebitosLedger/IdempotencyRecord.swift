/// What a store records for an Idempotency-Key so that a replay answers the same, in the
/// same words on every engine: a database written by one store version reads the same in
/// the next, and the two stores never disagree on what "the same request" is.
public enum IdempotencyRecord {
    /// What identifies "the same request" for a key of a client: the transaction. (The
    /// client is part of the key itself since the SQLite schema's v2; it stays in the text
    /// so records written by v1 compare the same.) The description is last, so spaces
    /// inside it cannot make two requests collide.
    public static func fingerprint(of request: TransactionRequest, clientID: Int64) -> String {
        "\(clientID) \(request.kind.rawValue) \(request.amount) \(request.description)"
    }

    /// The outcome's stored name and, where it has one, the balance it answered with.
    public static func encode(_ outcome: TransactionOutcome) -> (name: String, balance: Balance?) {
        switch outcome {
        case .applied(let balance): ("applied", balance)
        case .insufficientLimit(let balance): ("insufficient_limit", balance)
        case .balanceCeilingReached(let balance): ("balance_ceiling", balance)
        case .unknownClient: ("unknown_client", nil)
        case .idempotencyKeyReused: ("idempotency_key_reused", nil)
        }
    }

    /// The recorded outcome, or nil when the stored values are not one that ``encode(_:)``
    /// writes (the store reports that as corrupt data).
    public static func decode(name: String, limit: Int64?, balance: Int64?) -> TransactionOutcome? {
        let recorded = limit.flatMap { limit in balance.map { Balance(limit: limit, balance: $0) } }
        switch (name, recorded) {
        case ("applied", let recorded?): return .applied(recorded)
        case ("insufficient_limit", let recorded?): return .insufficientLimit(recorded)
        case ("balance_ceiling", let recorded?): return .balanceCeilingReached(recorded)
        case ("unknown_client", _): return .unknownClient
        default: return nil
        }
    }
}
