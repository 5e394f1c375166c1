/// A write the ledger could not carry out, and what the client may conclude from it.
///
/// The two cases are kept apart because they promise different things: after
/// ``notWritten(_:)`` the money did not move and a plain retry is safe; after
/// ``outcomeUnknown`` the transaction may or may not be stored, and only a retry with the
/// same Idempotency-Key is safe (it answers the recorded outcome, or applies it once).
public enum LedgerUnavailable: Error, Sendable, Hashable {
    /// Nothing was stored, and nothing will be: the write was refused before it reached
    /// the database, or its transaction was rolled back.
    case notWritten(Reason)
    /// The commit failed in a way that leaves its result unknown (an I/O error during
    /// COMMIT, a lost connection to the database server).
    case outcomeUnknown

    public enum Reason: Sendable, Hashable, CustomStringConvertible {
        /// The write waited longer than its deadline for its turn (the other instance
        /// held the database lock, the disk stalled): refused rather than committed late.
        case deadlineExceeded
        /// Too many writes were already waiting: refused at once.
        case queueFull
        /// The write's own statements failed and were rolled back.
        case transactionFailed
        /// The process is stopping and takes no new writes.
        case shuttingDown

        public var description: String {
            switch self {
            case .deadlineExceeded: "the write waited past its deadline"
            case .queueFull: "too many writes are waiting"
            case .transactionFailed: "the transaction failed and was rolled back"
            case .shuttingDown: "the instance is shutting down"
            }
        }
    }
}
