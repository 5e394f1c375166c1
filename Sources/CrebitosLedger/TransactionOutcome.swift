/// A client's limit and balance at one moment.
public struct Balance: Sendable, Hashable {
    /// `limite`: how far below zero the balance may go, in cents.
    public let limit: Int64
    /// `saldo`, in cents.
    public let balance: Int64

    public init(limit: Int64, balance: Int64) {
        self.limit = limit
        self.balance = balance
    }
}

/// What happened to a transaction request that reached the store.
public enum TransactionOutcome: Sendable, Hashable {
    /// Stored; the balance is the one right after this transaction.
    case applied(Balance)
    /// Not stored: a debit that would take the balance below `-limite`.
    case insufficientLimit(Balance)
    /// Not stored: a credit that would take the balance past
    /// ``TransactionRequest/maximumAmount``.
    case balanceCeilingReached(Balance)
    /// Not stored: there is no client with this id.
    case unknownClient
    /// Not stored: the idempotency key was first used with a different request.
    case idempotencyKeyReused
}

/// The answer to a write: its outcome, and whether it is the recorded answer to an
/// earlier request with the same idempotency key (in which case nothing was written now).
public struct TransactionReceipt: Sendable, Hashable {
    public let outcome: TransactionOutcome
    public let isReplay: Bool

    public init(outcome: TransactionOutcome, isReplay: Bool = false) {
        self.outcome = outcome
        self.isReplay = isReplay
    }
}
