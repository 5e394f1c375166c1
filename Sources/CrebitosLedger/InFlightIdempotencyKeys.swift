import Synchronization

/// The idempotency keys whose request is being processed in this process right now.
///
/// A second request with the same client and key while the first is still queued or
/// being committed is answered ``TransactionOutcome/idempotencyKeyInFlight`` at once:
/// it must not be written a second time, and waiting for the first could take as long
/// as the first's deadline. (Between processes the store's own serialisation does the
/// job: the second request finds the first's record and replays it.) Any store can use
/// this around its write.
public final class InFlightIdempotencyKeys: Sendable {
    private struct Entry: Hashable {
        let clientID: Int64
        let key: String
    }

    private let entries = Mutex(Set<Entry>())

    public init() {}

    /// Runs `write` unless a request with this client and key is already running, in
    /// which case `completion` gets ``TransactionOutcome/idempotencyKeyInFlight`` at once
    /// and `write` is not run. The key is released when `write` calls its completion,
    /// before `completion` is called. Without a key, just runs `write`.
    public func whileClaimed(
        _ key: IdempotencyKey?, forClient clientID: Int64,
        completion: @escaping @Sendable (Result<TransactionReceipt, any Error>) -> Void,
        _ write: (_ completion: @escaping @Sendable (Result<TransactionReceipt, any Error>) -> Void) -> Void
    ) {
        guard let key else { return write(completion) }
        let entry = Entry(clientID: clientID, key: key.value)
        guard entries.withLock({ $0.insert(entry).inserted }) else {
            return completion(.success(TransactionReceipt(outcome: .idempotencyKeyInFlight)))
        }
        write { result in
            _ = self.entries.withLock { $0.remove(entry) }
            completion(result)
        }
    }

    /// How many keys are claimed now (for tests and metrics).
    public var count: Int {
        entries.withLock { $0.count }
    }
}
