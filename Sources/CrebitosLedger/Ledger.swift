/// Where balances and transactions live. The HTTP layer depends on this protocol, not on
/// a concrete database; the SQLite store implements it.
///
/// Implementations must apply each transaction atomically: check the limit, change the
/// balance and record the transaction in one step that either happens entirely or not
/// at all, and report it only once it is durable.
///
/// The requirements take a completion handler rather than being `async`: the HTTP server
/// runs on a SwiftNIO event loop, and a store that can answer at once (a statement read
/// from a local file) or from its own writer thread then costs no task and no executor
/// hop per request. `completion` is called exactly once, on any thread, possibly before
/// the method returns. The `async` forms below are for everything else (tests, tools).
public protocol Ledger: Sendable {
    /// Applies a validated transaction to a client.
    ///
    /// - Parameter idempotencyKey: when given, the first request with this key (for this
    ///   client) is applied and its outcome recorded; a later request with the same key
    ///   and the same transaction gets the recorded outcome back without writing anything,
    ///   and one with a different transaction gets ``TransactionOutcome/idempotencyKeyReused``.
    /// - Parameter alreadyWaited: how long the request waited before this process read it
    ///   (queued in nginx, or unread in the socket of a process that was frozen). The store's
    ///   write deadline counts from when the request entered the system, not from now, so a
    ///   request whose client was already told it failed is refused, never written.
    /// - Parameter completion: the receipt, or a ``LedgerUnavailable`` saying whether
    ///   anything may have been stored.
    func apply(
        _ request: TransactionRequest,
        toClient clientID: Int64,
        idempotencyKey: IdempotencyKey?,
        alreadyWaited: Duration,
        completion: @escaping @Sendable (Result<TransactionReceipt, any Error>) -> Void
    )

    /// The client's statement, or nil when there is no such client.
    func statement(
        forClient clientID: Int64,
        completion: @escaping @Sendable (Result<AccountStatement?, any Error>) -> Void
    )
}

extension Ledger {
    /// A request read as soon as it arrived.
    public func apply(
        _ request: TransactionRequest, toClient clientID: Int64, idempotencyKey: IdempotencyKey?,
        completion: @escaping @Sendable (Result<TransactionReceipt, any Error>) -> Void
    ) {
        apply(request, toClient: clientID, idempotencyKey: idempotencyKey, alreadyWaited: .zero, completion: completion)
    }

    public func apply(
        _ request: TransactionRequest, toClient clientID: Int64, idempotencyKey: IdempotencyKey? = nil
    ) async throws -> TransactionReceipt {
        try await withCheckedThrowingContinuation { continuation in
            apply(request, toClient: clientID, idempotencyKey: idempotencyKey) { continuation.resume(with: $0) }
        }
    }

    public func statement(forClient clientID: Int64) async throws -> AccountStatement? {
        try await withCheckedThrowingContinuation { continuation in
            statement(forClient: clientID) { continuation.resume(with: $0) }
        }
    }
}
