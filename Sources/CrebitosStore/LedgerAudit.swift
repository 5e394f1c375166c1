import CrebitosLedger
import GRDB

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
