/// Where balances and transactions live. The HTTP layer depends on this protocol, not on
/// a concrete database, and the SQLite store implements it.
///
/// Implementations must apply each transaction atomically: check the limit, change the
/// balance and record the transaction in one step that either happens entirely or not
/// at all, and return only once it is durable.
public protocol Ledger: Sendable {
    /// Applies a validated transaction to a client.
    ///
    /// - Parameter idempotencyKey: when given, the first request with this key is applied
    ///   and its outcome recorded; a later request with the same key and the same client
    ///   and transaction gets the recorded outcome back without writing anything, and one
    ///   with a different client or transaction gets ``TransactionOutcome/idempotencyKeyReused``.
    func apply(
        _ request: TransactionRequest,
        toClient clientID: Int64,
        idempotencyKey: IdempotencyKey?
    ) async throws -> TransactionReceipt

    /// The client's statement, or nil when there is no such client.
    func statement(forClient clientID: Int64) async throws -> AccountStatement?
}

extension Ledger {
    public func apply(_ request: TransactionRequest, toClient clientID: Int64) async throws -> TransactionReceipt {
        try await apply(request, toClient: clientID, idempotencyKey: nil)
    }
}
