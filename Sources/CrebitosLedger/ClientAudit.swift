/// One client's balance checked against its stored transactions.
public struct ClientAudit: Sendable, Hashable {
    public let clientID: Int64
    public let limit: Int64
    public let balance: Int64
    /// Σ credits − Σ debits over the client's stored transactions.
    public let sumOfTransactions: Int64
    public let transactionCount: Int

    public init(clientID: Int64, limit: Int64, balance: Int64, sumOfTransactions: Int64, transactionCount: Int) {
        self.clientID = clientID
        self.limit = limit
        self.balance = balance
        self.sumOfTransactions = sumOfTransactions
        self.transactionCount = transactionCount
    }

    /// The ledger's invariants (docs/API.md): the balance is what the transactions add up to, and never
    /// below `-limite`.
    public var isConsistent: Bool {
        balance == sumOfTransactions && balance >= -limit
    }
}
