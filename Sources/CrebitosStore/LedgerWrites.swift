import CrebitosLedger
import GRDB

/// The SQL of one transaction request, run inside the group commit's IMMEDIATE transaction.
enum LedgerWrites {
    static func apply(_ write: PendingWrite, in db: Database, at now: Int64) throws -> TransactionReceipt {
        guard let key = write.idempotencyKey else {
            return TransactionReceipt(outcome: try change(write, in: db, at: now))
        }
        let fingerprint = IdempotencyRecord.fingerprint(of: write.request, clientID: write.clientID)
        if let recorded = try Row.fetchOne(
            db.cachedStatement(sql: """
                SELECT request, outcome, limite, saldo FROM idempotency_keys WHERE cliente_id = ? AND key = ?
                """),
            arguments: [write.clientID, key.value])
        {
            guard recorded["request"] == fingerprint else {
                return TransactionReceipt(outcome: .idempotencyKeyReused)
            }
            let name: String = recorded["outcome"]
            guard let outcome = IdempotencyRecord.decode(name: name, limit: recorded["limite"], balance: recorded["saldo"]) else {
                throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: "idempotency_keys.outcome is \(name)")
            }
            return TransactionReceipt(outcome: outcome, isReplay: true)
        }
        let outcome = try change(write, in: db, at: now)
        // A request for a client that does not exist stores nothing, not even its key:
        // otherwise anyone could fill the disk with records for made-up clients.
        if outcome == .unknownClient { return TransactionReceipt(outcome: outcome) }
        let recorded = IdempotencyRecord.encode(outcome)
        try db.cachedStatement(sql: """
            INSERT INTO idempotency_keys (key, cliente_id, request, outcome, limite, saldo, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [
                key.value, write.clientID, fingerprint, recorded.name,
                recorded.balance?.limit, recorded.balance?.balance, now,
            ])
        return TransactionReceipt(outcome: outcome)
    }

    /// Checks the limit and moves the balance in one statement, then records the
    /// transaction. If the `UPDATE` matches no row, nothing was changed and one more
    /// read tells why.
    private static func change(_ write: PendingWrite, in db: Database, at now: Int64) throws -> TransactionOutcome {
        let request = write.request
        let update: Statement
        switch request.kind {
        case .debit:
            update = try db.cachedStatement(sql: """
                UPDATE clientes SET saldo = saldo - :valor
                WHERE id = :id AND saldo - :valor >= -limite
                RETURNING limite, saldo
                """)
        case .credit:
            update = try db.cachedStatement(sql: """
                UPDATE clientes SET saldo = saldo + :valor
                WHERE id = :id AND saldo + :valor <= :teto
                RETURNING limite, saldo
                """)
        }
        var arguments: StatementArguments = ["valor": request.amount, "id": write.clientID]
        if request.kind == .credit {
            arguments += ["teto": TransactionRequest.maximumAmount]
        }
        if let updated = try Row.fetchOne(update, arguments: arguments) {
            try db.cachedStatement(sql: """
                INSERT INTO transacoes (cliente_id, valor, tipo, descricao, realizada_em)
                VALUES (?, ?, ?, ?, ?)
                """).execute(arguments: [write.clientID, request.amount, request.kind.rawValue, request.description, now])
            return .applied(Balance(limit: updated[0], balance: updated[1]))
        }
        guard let client = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT limite, saldo FROM clientes WHERE id = ?"),
            arguments: [write.clientID])
        else { return .unknownClient }
        let balance = Balance(limit: client[0], balance: client[1])
        return request.kind == .debit ? .insufficientLimit(balance) : .balanceCeilingReached(balance)
    }
}
