import CrebitosLedger
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The ledger on a PostgreSQL database, shared by any number of processes on any number
/// of hosts: the server's row locks and transactions do what the SQLite store's lock file
/// and `BEGIN IMMEDIATE` do.
///
/// - A write is one transaction on a pooled connection: `UPDATE clientes ... WHERE id = $1
///   AND saldo + delta >= -limite RETURNING` checks the limit and moves the balance in one
///   statement under the client's row lock, and the transaction row is inserted by the
///   same statement (a data-modifying CTE). The answer is sent after `COMMIT` returned;
///   with the server's default `synchronous_commit = on` the commit is then flushed to the
///   server's WAL.
/// - With an Idempotency-Key the client's row is locked first (`SELECT ... FOR UPDATE`),
///   so requests of one client with one key are serialised across processes: the second
///   finds the first's record (READ COMMITTED takes a new snapshot per statement).
/// - A statement is one query (the client joined with its 10 newest transactions), so
///   the balance and the entries come from one snapshot.
/// - `realizada_em` is the process's wall clock, except that it never goes backwards for
///   a client: `clientes.ultima_em` keeps the client's newest one, and a new transaction
///   gets `max(wall clock, ultima_em + 1 µs)` under the row lock, whichever host's clock
///   wrote the previous one.
///
/// Nothing here caches a balance: every answer comes from the database.
public final class PostgresLedger: Ledger {
    public let configuration: PostgresStoreConfiguration
    let client: PostgresClient
    let logger: Logger
    private let runTask: Task<Void, Never>
    private let keysInFlight = InFlightIdempotencyKeys()
    private let state = Mutex(State())

    private struct State {
        var isClosing = false
        var operations = 0
    }

    private init(configuration: PostgresStoreConfiguration, client: PostgresClient, runTask: Task<Void, Never>, logger: Logger) {
        self.configuration = configuration
        self.client = client
        self.runTask = runTask
        self.logger = logger
    }

    /// Connects, creates the schema and the five clients if they are missing (safe when
    /// several instances start at once on an empty database), and returns once the
    /// database answered: a server that is not reachable makes this throw.
    public static func open(_ configuration: PostgresStoreConfiguration, logger: Logger = Logger(label: "crebitos.postgres")) async throws -> PostgresLedger {
        var pool: PostgresClient.Configuration
        let url = configuration.url
        switch url.endpoint {
        case .tcp(let host, let port):
            pool = .init(host: host, port: port, username: url.user, password: url.password, database: url.database, tls: .disable)
        case .unixSocket(let directory, let port):
            pool = .init(unixSocketPath: "\(directory)/.s.PGSQL.\(port)", username: url.user, password: url.password, database: url.database)
        }
        pool.options.maximumConnections = max(1, configuration.maximumConnections)
        pool.options.minimumConnections = 0
        let deadline = String(max(1, configuration.writeDeadline.wholeMilliseconds))
        pool.options.additionalStartupParameters = [
            // A statement waiting longer than this (a row lock held by a stuck transaction)
            // is cancelled and rolled back by the server: "not written", in bounded time.
            ("statement_timeout", deadline),
            // A transaction left open by a frozen process is ended by the server, so the
            // client row it locked is not held forever.
            ("idle_in_transaction_session_timeout", deadline),
            ("application_name", "crebitos"),
        ]
        // The schema on a connection of its own, before the pool exists: a server that
        // cannot be reached fails the start at once (the pool would retry for a minute).
        var single: PostgresConnection.Configuration
        switch url.endpoint {
        case .tcp(let host, let port):
            single = .init(host: host, port: port, username: url.user, password: url.password, database: url.database, tls: .disable)
        case .unixSocket(let directory, let port):
            single = .init(unixSocketPath: "\(directory)/.s.PGSQL.\(port)", username: url.user, password: url.password, database: url.database)
        }
        single.options.additionalStartupParameters = pool.options.additionalStartupParameters
        let connection = try await PostgresConnection.connect(configuration: single, id: 0, logger: logger)
        do {
            try await PostgresSchema.prepare(connection, logger: logger)
        } catch {
            try? await connection.close()
            throw error
        }
        try await connection.close()
        let client = PostgresClient(configuration: pool, backgroundLogger: logger)
        let runTask = Task { await client.run() }
        return PostgresLedger(configuration: configuration, client: client, runTask: runTask, logger: logger)
    }

    // MARK: Writes

    public func apply(
        _ request: TransactionRequest,
        toClient clientID: Int64,
        idempotencyKey: IdempotencyKey?,
        completion: @escaping @Sendable (Result<TransactionReceipt, any Error>) -> Void
    ) {
        keysInFlight.whileClaimed(idempotencyKey, forClient: clientID, completion: completion) { completion in
            // Every write is answered within twice its deadline, even one whose query never
            // returns (a connection lost without an error, a pool waiting for a server that
            // is gone): found by killing the PostgreSQL server under load (docs/FAULTS.md).
            // The operation ends with the answer (close() waits for that), not when a stuck
            // query returns, if it ever does.
            answerWithin(configuration.writeDeadline * 2, completion: completion) { attempt in
                await self.write(request, clientID: clientID, key: idempotencyKey, attempt: attempt).mapError { $0 as any Error }
            }
        }
    }

    /// One write's answer, given once: by the write when it finishes, or by its deadline.
    /// The state also decides, atomically, whether COMMIT may still be sent: once the client
    /// was told "not written", the write can only roll back; once COMMIT was sent, an
    /// expired deadline can only say "outcome unknown".
    /// A statement read uses it too (it never commits): its deadline answers "unavailable".
    final class Attempt<Value: Sendable>: Sendable {
        private enum Phase { case running, committing, answered }
        private let phase = Mutex(Phase.running)
        private let completion: @Sendable (Result<Value, any Error>) -> Void

        init(_ completion: @escaping @Sendable (Result<Value, any Error>) -> Void) {
            self.completion = completion
        }

        /// Called before sending COMMIT: false when the client was already answered, and
        /// the transaction must be rolled back instead.
        func startCommit() -> Bool {
            phase.withLock { phase in
                guard phase == .running else { return false }
                phase = .committing
                return true
            }
        }

        var commitSent: Bool { phase.withLock { $0 == .committing } }

        func answer(_ result: Result<Value, any Error>) {
            let first = phase.withLock { phase in
                defer { phase = .answered }
                return phase != .answered
            }
            if first { completion(result) }
        }

        /// The deadline passed: "not written" if COMMIT was not sent (and now never will
        /// be), "outcome unknown" if it was; nothing if the write already answered.
        func expire() {
            let before = phase.withLock { phase in
                defer { phase = .answered }
                return phase
            }
            switch before {
            case .running: completion(.failure(LedgerUnavailable.notWritten(.deadlineExceeded)))
            case .committing: completion(.failure(LedgerUnavailable.outcomeUnknown))
            case .answered: break
            }
        }
    }

    typealias WriteAttempt = Attempt<TransactionReceipt>

    /// Runs `work` for a request and answers it through `completion` once: with its result,
    /// or when `deadline` passed first (``Attempt/expire()``). The operation is counted from
    /// begin() here to the answer (close() waits for it); once closing, nothing starts.
    private func answerWithin<Value: Sendable>(
        _ deadline: Duration,
        completion: @escaping @Sendable (Result<Value, any Error>) -> Void,
        _ work: @escaping @Sendable (Attempt<Value>) async -> Result<Value, any Error>
    ) {
        guard begin() else { return completion(.failure(LedgerUnavailable.notWritten(.shuttingDown))) }
        let attempt = Attempt<Value> { result in
            self.end()
            completion(result)
        }
        let watchdog = Task {
            try? await Task.sleep(for: deadline)
            guard !Task.isCancelled else { return }
            attempt.expire()
        }
        Task {
            attempt.answer(await work(attempt))
            watchdog.cancel()
        }
    }

    private func write(_ request: TransactionRequest, clientID: Int64, key: IdempotencyKey?, attempt: WriteAttempt) async -> Result<TransactionReceipt, LedgerUnavailable> {
        let logger = self.logger
        // Like the SQLite store's write deadline: a write that waited this long for a
        // connection (all of them busy) is refused before it begins, never committed late.
        let deadline = ContinuousClock.now + configuration.writeDeadline
        do {
            let receipt: TransactionReceipt = try await client.withConnection { connection -> TransactionReceipt in
                guard ContinuousClock.now < deadline else { throw LedgerUnavailable.notWritten(.deadlineExceeded) }
                let now = configuration.wallClock()
                return try await Self.inTransaction(connection, attempt: attempt, logger: logger) {
                    if let key {
                        return try await Self.applyWithKey(request, clientID: clientID, key: key, at: now, on: connection, logger: logger)
                    }
                    let outcome = try await Self.change(request, clientID: clientID, at: now, on: connection, logger: logger)
                    if case .applied = outcome { return (TransactionReceipt(outcome: outcome), true) }
                    return (TransactionReceipt(outcome: outcome), false)
                }
            }
            return .success(receipt)
        } catch {
            return .failure(Self.unavailable(error, commitSent: attempt.commitSent))
        }
    }

    /// BEGIN, `body`, then COMMIT when `body` says something was written (ROLLBACK when
    /// it only read); on any error, ROLLBACK so the connection returns to the pool clean.
    private static func inTransaction(
        _ connection: PostgresConnection, attempt: WriteAttempt, logger: Logger,
        _ body: () async throws -> (TransactionReceipt, wrote: Bool)
    ) async throws -> TransactionReceipt {
        try await connection.query("BEGIN", logger: logger)
        let result: (TransactionReceipt, wrote: Bool)
        do {
            result = try await body()
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
        guard result.wrote else {
            // A refusal, a replay or an unknown client: nothing was written.
            try await connection.query("ROLLBACK", logger: logger)
            return result.0
        }
        guard attempt.startCommit() else {
            // Answered "not written" by its deadline meanwhile: it must stay so.
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw LedgerUnavailable.notWritten(.deadlineExceeded)
        }
        try await connection.query("COMMIT", logger: logger)
        return result.0
    }

    /// Locks the client's row, then looks the key up: the lock makes a second request
    /// with the same key (from any process) wait until the first committed, and then see
    /// its record.
    private static func applyWithKey(
        _ request: TransactionRequest, clientID: Int64, key: IdempotencyKey, at now: Int64,
        on connection: PostgresConnection, logger: Logger
    ) async throws -> (TransactionReceipt, wrote: Bool) {
        let locked = try await connection.query(
            "SELECT limite, saldo FROM clientes WHERE id = \(clientID) FOR UPDATE", logger: logger
        ).collect()
        // A request for a client that does not exist stores nothing, not even its key.
        guard locked.first != nil else { return (TransactionReceipt(outcome: .unknownClient), false) }
        let fingerprint = IdempotencyRecord.fingerprint(of: request, clientID: clientID)
        let recorded = try await connection.query(
            "SELECT request, outcome, limite, saldo FROM idempotency_keys WHERE cliente_id = \(clientID) AND key = \(key.value)",
            logger: logger
        ).collect()
        if let row = recorded.first {
            let (storedRequest, outcome, limit, balance) = try row.decode((String, String, Int64?, Int64?).self)
            guard storedRequest == fingerprint else { return (TransactionReceipt(outcome: .idempotencyKeyReused), false) }
            guard let replayed = IdempotencyRecord.decode(name: outcome, limit: limit, balance: balance) else {
                throw PostgresStoreError.corrupt("idempotency_keys.outcome is \(outcome)")
            }
            return (TransactionReceipt(outcome: replayed, isReplay: true), false)
        }
        let outcome = try await change(request, clientID: clientID, at: now, on: connection, logger: logger)
        if outcome == .unknownClient { return (TransactionReceipt(outcome: outcome), false) }
        let record = IdempotencyRecord.encode(outcome)
        try await connection.query(
            """
            INSERT INTO idempotency_keys (cliente_id, key, request, outcome, limite, saldo, created_at)
            VALUES (\(clientID), \(key.value), \(fingerprint), \(record.name), \(record.balance?.limit), \(record.balance?.balance), \(now))
            """,
            logger: logger)
        return (TransactionReceipt(outcome: outcome), true)
    }

    /// Checks the limit (or, for a credit, the balance ceiling), moves the balance and
    /// inserts the transaction in one statement under the client's row lock. If the
    /// `UPDATE` matches no row, nothing was changed and one more read tells why.
    private static func change(
        _ request: TransactionRequest, clientID: Int64, at now: Int64, on connection: PostgresConnection, logger: Logger
    ) async throws -> TransactionOutcome {
        let delta = request.balanceDelta
        let ceiling = TransactionRequest.maximumAmount
        let updated = try await connection.query(
            """
            WITH u AS (
                UPDATE clientes SET saldo = saldo + \(delta), ultima_em = GREATEST(\(now), ultima_em + 1)
                WHERE id = \(clientID) AND saldo + \(delta) >= -limite AND saldo + \(delta) <= \(ceiling)
                RETURNING limite, saldo, ultima_em
            ), t AS (
                INSERT INTO transacoes (cliente_id, valor, tipo, descricao, realizada_em)
                SELECT \(clientID), \(request.amount), \(request.kind.rawValue), \(request.description), ultima_em FROM u
            )
            SELECT limite, saldo FROM u
            """,
            logger: logger
        ).collect()
        if let row = updated.first {
            let (limit, balance) = try row.decode((Int64, Int64).self)
            return .applied(Balance(limit: limit, balance: balance))
        }
        let client = try await connection.query("SELECT limite, saldo FROM clientes WHERE id = \(clientID)", logger: logger).collect()
        guard let row = client.first else { return .unknownClient }
        let (limit, balance) = try row.decode((Int64, Int64).self)
        let current = Balance(limit: limit, balance: balance)
        return request.kind == .debit ? .insufficientLimit(current) : .balanceCeilingReached(current)
    }

    /// What a failed write promises the client.
    static func unavailable(_ error: any Error, commitSent: Bool) -> LedgerUnavailable {
        if let error = error as? LedgerUnavailable { return error }
        if let error = error as? PSQLError {
            switch error.code {
            case .server:
                // The server answered with an error: the statement (or COMMIT) failed and
                // its transaction was rolled back.
                return .notWritten(.transactionFailed)
            case .poolClosed:
                return .notWritten(.shuttingDown)
            default:
                break
            }
        }
        // Anything else (the connection lost, a protocol error): nothing can have been
        // committed before COMMIT was sent; after it, nobody knows.
        return commitSent ? .outcomeUnknown : .notWritten(.transactionFailed)
    }

    // MARK: Reads

    /// One query, so one snapshot: the client joined with its newest transactions.
    public func statement(
        forClient clientID: Int64,
        completion: @escaping @Sendable (Result<AccountStatement?, any Error>) -> Void
    ) {
        answerWithin(configuration.writeDeadline * 2, completion: completion) { _ in
            do {
                return .success(try await self.readStatement(forClient: clientID))
            } catch {
                return .failure(error)
            }
        }
    }

    private func readStatement(forClient clientID: Int64) async throws -> AccountStatement? {
        let rows = try await client.query(
            """
            SELECT c.limite, c.saldo, t.valor, t.tipo, t.descricao, t.realizada_em
            FROM clientes c LEFT JOIN LATERAL (
                SELECT id, valor, tipo, descricao, realizada_em FROM transacoes
                WHERE cliente_id = c.id ORDER BY id DESC LIMIT \(Int64(AccountStatement.maximumEntries))
            ) t ON true
            WHERE c.id = \(clientID)
            ORDER BY t.id DESC
            """,
            logger: logger
        ).collect()
        guard let first = rows.first else { return nil }
        let (limit, balance, _, _, _, _) = try first.decode((Int64, Int64, Int64?, String?, String?, Int64?).self)
        var entries: [StatementEntry] = []
        for row in rows {
            let (_, _, amount, kindText, description, performedAt) = try row.decode((Int64, Int64, Int64?, String?, String?, Int64?).self)
            guard let amount, let kindText, let description, let performedAt else { continue }
            guard let kind = TransactionKind(rawValue: kindText) else { throw PostgresStoreError.corrupt("transacoes.tipo is \(kindText)") }
            entries.append(StatementEntry(amount: amount, kind: kind, description: description, performedAt: performedAt))
        }
        let takenAt = max(configuration.wallClock(), entries.first?.performedAt ?? .min)
        return AccountStatement(balance: Balance(limit: limit, balance: balance), takenAt: takenAt, entries: entries)
    }

    /// Checks every client's invariants in one snapshot (one query), like the SQLite
    /// store's `audit()`.
    public func audit() async throws -> [ClientAudit] {
        let rows = try await client.query(
            """
            SELECT c.id, c.limite, c.saldo,
                   COALESCE(SUM(CASE t.tipo WHEN 'c' THEN t.valor ELSE -t.valor END), 0)::bigint,
                   COUNT(t.id)
            FROM clientes c LEFT JOIN transacoes t ON t.cliente_id = c.id
            GROUP BY c.id ORDER BY c.id
            """,
            logger: logger
        ).collect()
        return try rows.map { row in
            let (id, limit, balance, sum, count) = try row.decode((Int64, Int64, Int64, Int64, Int64).self)
            return ClientAudit(clientID: id, limit: limit, balance: balance, sumOfTransactions: sum, transactionCount: Int(count))
        }
    }

    // MARK: Life cycle

    private func begin() -> Bool {
        state.withLock { state in
            guard !state.isClosing else { return false }
            state.operations += 1
            return true
        }
    }

    private func end() {
        state.withLock { $0.operations -= 1 }
    }

    /// The background services to run beside the server: the cleanup of expired
    /// idempotency records.
    public func backgroundServices(logger: Logger) -> [any Service] {
        [PostgresIdempotencyKeyCleaner(ledger: self, logger: logger)]
    }

    /// Refuses new requests (``LedgerUnavailable/Reason/shuttingDown``), waits until the
    /// ones running finished (each bounded by the server's `statement_timeout`), then
    /// closes the connections.
    public func close() async {
        state.withLock { $0.isClosing = true }
        // Every write is answered within twice its deadline (see apply), so this ends.
        while state.withLock({ $0.operations }) > 0 {
            try? await Task.sleep(for: .milliseconds(1))
        }
        runTask.cancel()
        await runTask.value
    }
}

/// Failures of the PostgreSQL store that are not about the request.
public enum PostgresStoreError: Error, Sendable, CustomStringConvertible {
    case corrupt(String)

    public var description: String {
        switch self {
        case .corrupt(let what): "unexpected data in the database: \(what)"
        }
    }
}
