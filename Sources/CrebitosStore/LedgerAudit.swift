import GRDB

/// One client's balance checked against its stored transactions.
public struct ClientAudit: Sendable, Hashable {
    public let clientID: Int64
    public let limit: Int64
    public let balance: Int64
    /// Σ credits − Σ debits over the client's stored transactions.
    public let sumOfTransactions: Int64
    public let transactionCount: Int

    /// The ledger's invariants (docs/API.md): the balance is what the transactions add up to, and never
    /// below `-limite`.
    public var isConsistent: Bool {
        balance == sumOfTransactions && balance >= -limit
    }
}

extension SQLiteLedger {
    /// Checks every client's invariants in one snapshot. `scripts/audit` runs the same
    /// query with the sqlite3 CLI.
    public func audit() throws -> [ClientAudit] {
        try database.read { db in
            try Row.fetchAll(db, sql: """
                SELECT c.id, c.limite, c.saldo,
                       COALESCE(SUM(CASE t.tipo WHEN 'c' THEN t.valor ELSE -t.valor END), 0),
                       COUNT(t.id)
                FROM clientes c LEFT JOIN transacoes t ON t.cliente_id = c.id
                GROUP BY c.id ORDER BY c.id
                """
            ).map { row in
                ClientAudit(
                    clientID: row[0], limit: row[1], balance: row[2],
                    sumOfTransactions: row[3], transactionCount: row[4])
            }
        }
    }
}
