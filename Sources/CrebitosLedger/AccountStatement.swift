/// A client's balance and newest transactions, read from one database snapshot.
public struct AccountStatement: Sendable, Hashable {
    public let balance: Balance
    /// When the snapshot was read, in microseconds since the Unix epoch (UTC).
    public let takenAt: Int64
    /// At most ``AccountStatement/maximumEntries`` transactions, newest first.
    public let entries: [StatementEntry]

    public static let maximumEntries = 10

    public init(balance: Balance, takenAt: Int64, entries: [StatementEntry]) {
        self.balance = balance
        self.takenAt = takenAt
        self.entries = entries
    }
}

/// One stored transaction as a statement shows it.
public struct StatementEntry: Sendable, Hashable {
    public let amount: Int64
    public let kind: TransactionKind
    public let description: String
    /// When it was committed, in microseconds since the Unix epoch (UTC).
    public let performedAt: Int64

    public init(amount: Int64, kind: TransactionKind, description: String, performedAt: Int64) {
        self.amount = amount
        self.kind = kind
        self.description = description
        self.performedAt = performedAt
    }
}
