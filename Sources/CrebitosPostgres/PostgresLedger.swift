import CrebitosLedger
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The ledger on a PostgreSQL database, shared by any number of processes on any number
/// of hosts: the server's row locks and transactions do what the SQLite store's lock file
/// and `BEGIN IMMEDIATE` do.
///
/// - A write is one round trip: one `CALL` of a PL/pgSQL procedure created with the schema
///   (``PostgresSchema/writeProcedureStatement``), in a READ COMMITTED transaction (pinned by
///   a session setting and checked by the procedure). `UPDATE clientes ... WHERE id = $1
///   AND saldo + delta >= -limite RETURNING` checks the limit and moves the balance in one
///   statement under the client's row lock, the transaction row is inserted by the same
///   statement (a data-modifying CTE), and the procedure commits before it answers: the
///   row lock lasts from that statement to the end of the commit's WAL flush. With the
///   server's default `synchronous_commit = on` the commit is flushed to the server's WAL
///   before the answer. A refusal, a replay or a reused key rolls back (nothing to flush).
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
    let keepalive: PostgresKeepalive
    private let runTask: Task<Void, Never>
    private let state = Mutex(State())
    private let taskCount = Counter()
    /// Where the deadlines of requests made off any event loop fire (``answerWithin(_:completion:_:)``).
    private let deadlineLoop: any EventLoop = PostgresClient.defaultEventLoopGroup.next()

    private struct State {
        var isClosing = false
        /// Requests not answered yet (close() waits for them).
        var operations = 0
        /// Requests whose work has not ended, answered or not: bounded by
        /// ``PostgresStoreConfiguration/maximumRequestsInFlight``.
        var working = 0
    }

    private init(configuration: PostgresStoreConfiguration, client: PostgresClient, runTask: Task<Void, Never>, logger: Logger) {
        self.configuration = configuration
        self.client = client
        if case .tcp = configuration.url.endpoint {
            self.keepalive = PostgresKeepalive(enabled: true, logger: logger)
        } else {
            self.keepalive = PostgresKeepalive(enabled: false, logger: logger)
        }
        self.runTask = runTask
        self.logger = logger
    }

    /// Connects, creates the schema and the five clients if they are missing (safe when
    /// several instances start at once on an empty database), and returns once the
    /// database answered: a server that is not reachable makes this throw.
    public static func open(_ configuration: PostgresStoreConfiguration, logger: Logger = Logger(label: "crebitos.postgres")) async throws -> PostgresLedger {
        var pool: PostgresClient.Configuration
        let url = configuration.url
        let tls = try url.tlsConfiguration()
        switch url.endpoint {
        case .tcp(let host, let port):
            pool = .init(host: host, port: port, username: url.user, password: url.password, database: url.database, tls: tls.pool)
        case .unixSocket(let directory, let port):
            pool = .init(unixSocketPath: "\(directory)/.s.PGSQL.\(port)", username: url.user, password: url.password, database: url.database)
        }
        pool.options.maximumConnections = max(1, configuration.maximumConnections)
        pool.options.minimumConnections = 0
        let deadline = String(max(1, configuration.writeDeadline.wholeMilliseconds))
        let sessionSettings = [
            // A statement running longer than this (a stalled disk, a lock wait not caught
            // by lock_timeout) is cancelled and rolled back by the server: "not written",
            // in bounded time.
            ("statement_timeout", deadline),
            // A transaction left open by a frozen process is ended by the server, so the
            // client row it locked is not held forever.
            ("idle_in_transaction_session_timeout", deadline),
            // The server probes an idle connection after 10 s, so the backend (and any
            // transaction) of an instance whose host vanished ends in about 25 s instead
            // of the kernel's 2 hours. (The pool's side of it: PostgresKeepalive.)
            ("tcp_keepalives_idle", "10"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_keepalives_count", "3"),
            // The write procedure relies on READ COMMITTED (a new snapshot per statement for
            // the key path) and refuses to run under anything else: a database whose
            // default_transaction_isolation is stricter must not change it. A write is one
            // CALL in an implicit transaction, with no BEGIN to pin it in.
            ("default_transaction_isolation", "read committed"),
            ("application_name", "crebitos"),
        ]
        pool.options.additionalStartupParameters = sessionSettings + [
            // A write waiting this long for a client's row lock gives up: "not written",
            // long before the statement deadline. (Not on the schema's connection below:
            // instances starting together wait for each other's advisory lock.)
            ("lock_timeout", String(max(1, configuration.lockTimeout.wholeMilliseconds))),
        ]
        // The schema on a connection of its own, before the pool exists: a server that
        // cannot be reached fails the start at once (the pool would retry for a minute).
        var single: PostgresConnection.Configuration
        switch url.endpoint {
        case .tcp(let host, let port):
            single = .init(host: host, port: port, username: url.user, password: url.password, database: url.database, tls: tls.connection)
        case .unixSocket(let directory, let port):
            single = .init(unixSocketPath: "\(directory)/.s.PGSQL.\(port)", username: url.user, password: url.password, database: url.database)
        }
        single.options.additionalStartupParameters = sessionSettings
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

    /// `alreadyWaited`: how long the request waited before this process read it (nginx's
    /// X-Request-Start); the write deadline counts from then, and a request already past it
    /// is refused at once, never sent to the server.
    public func apply(
        _ request: TransactionRequest,
        toClient clientID: Int64,
        idempotencyKey: IdempotencyKey?,
        alreadyWaited: Duration,
        completion: @escaping @Sendable (Result<TransactionReceipt, any Error>) -> Void
    ) {
        guard alreadyWaited < configuration.writeDeadline else {
            return completion(.failure(LedgerUnavailable.notWritten(.deadlineExceeded)))
        }
        // A request whose key is in flight waits on the first's row lock and then replays its
        // record, in this process as in another (docs/ARCHITECTURE.md, "Idempotency keys").
        // Every write is answered within twice its deadline, even one whose query never
        // returns (a connection lost without an error, a pool waiting for a server that is
        // gone): found by killing the PostgreSQL server under load (docs/FAULTS.md). The
        // operation ends with the answer (close() waits for that), not when a stuck query
        // returns, if it ever does.
        answerWithin(configuration.writeDeadline * 2, completion: completion) { attempt in
            await self.write(request, clientID: clientID, key: idempotencyKey, alreadyWaited: alreadyWaited, attempt: attempt)
                .mapError { $0 as any Error }
        }
    }

    /// One write's answer, given once: by the write when it finishes, or by its deadline.
    /// The state also decides, atomically, whether COMMIT may still be sent: once the client
    /// was told "not written", the write can only roll back; once COMMIT was sent, an
    /// expired deadline can only say "outcome unknown".
    /// A statement read uses it too (it never commits): its deadline answers "unavailable".
    ///
    /// It also knows the pooled connection the work is using, if any: a deadline that
    /// answers for the work closes that connection, so the abandoned query ends at once
    /// (postgres-nio cannot cancel a query) instead of holding the connection, and the
    /// work's memory, until a stalled server answers, if it ever does. Its server rolls the
    /// transaction back when it sees the connection closed (or, if COMMIT had arrived,
    /// commits it: "outcome unknown" was the answer).
    ///
    /// A query sent on a connection that was already closed never returns (postgres-nio
    /// drops it without failing it; the pool can hand out a connection whose close it has
    /// not processed yet): the work refuses a closed connection before each query
    /// (`send`), and the deadline lets the work go (``endWork()``) whatever it is doing, so
    /// that a request counts against the bound until it was answered and its connection
    /// closed, never longer.
    final class Attempt<Value: Sendable>: Sendable {
        private enum Phase { case running, committing, answered }
        private struct State {
            var phase = Phase.running
            var connection: PostgresConnection?
            var expired = false
            var workEnded = false
            var work: Task<Void, Never>?
        }
        private let state = Mutex(State())
        private let completion: @Sendable (Result<Value, any Error>) -> Void
        private let onWorkEnded: @Sendable () -> Void

        init(_ completion: @escaping @Sendable (Result<Value, any Error>) -> Void, onWorkEnded: @escaping @Sendable () -> Void = {}) {
            self.completion = completion
            self.onWorkEnded = onWorkEnded
        }

        /// Called before sending the write's `CALL` (which commits): false when the client
        /// was already answered "not written", and the call must not be sent.
        func startCommit() -> Bool {
            state.withLock { state in
                guard state.phase == .running else { return false }
                state.phase = .committing
                return true
            }
        }

        var commitSent: Bool { state.withLock { $0.phase == .committing } }

        /// The work is about to run queries on `connection`; throws "not written" when its
        /// deadline has already answered, or the connection is closed: the work must not start.
        func use(_ connection: PostgresConnection) throws(LedgerUnavailable) {
            guard !connection.isClosed else { throw .notWritten(.transactionFailed) }
            let expired = state.withLock { state in
                guard !state.expired else { return true }
                state.connection = connection
                return false
            }
            if expired { throw .notWritten(.deadlineExceeded) }
        }

        /// The work is done with its connection (it goes back to the pool): from now on
        /// the deadline must not touch it.
        func release() {
            state.withLock { $0.connection = nil }
        }

        /// The task doing the work, for the deadline to cancel (a connection it still
        /// waits for in the pool).
        func setWork(_ task: Task<Void, Never>) {
            let cancelNow = state.withLock { state in
                state.work = task
                return state.expired
            }
            if cancelNow { task.cancel() }
        }

        /// The work ended, or was let go by the deadline: once.
        func endWork() {
            let first = state.withLock { state in
                defer { state.workEnded = true; state.work = nil }
                return !state.workEnded
            }
            if first { onWorkEnded() }
        }

        func answer(_ result: Result<Value, any Error>) {
            let first = state.withLock { state in
                defer { state.phase = .answered }
                return state.phase != .answered
            }
            if first { completion(result) }
        }

        /// The deadline passed: "not written" if COMMIT was not sent (and now never will
        /// be), "outcome unknown" if it was; nothing if the work already answered. A
        /// connection still in use is closed (under the lock, so that a connection the work
        /// released, and another request may have leased, is never closed), and the work
        /// cancelled.
        func expire() {
            let (before, work) = state.withLock { state in
                defer { state.phase = .answered }
                state.expired = true
                if let connection = state.connection {
                    let _: EventLoopFuture<Void> = connection.close()
                    state.connection = nil
                }
                return (state.phase, state.work)
            }
            work?.cancel()
            switch before {
            case .running: completion(.failure(LedgerUnavailable.notWritten(.deadlineExceeded)))
            case .committing: completion(.failure(LedgerUnavailable.outcomeUnknown))
            case .answered: break
            }
            // Let the work go now, so it does not keep a place under the bound; it ends soon
            // after (its connection closed fails its query, see `send`; its lease wait is
            // cancelled). ``tasksRunning`` counts it until then.
            endWork()
        }
    }

    typealias WriteAttempt = Attempt<TransactionReceipt>

    /// A request's deadline, as an event loop's scheduled callback.
    private struct Deadline<Value: Sendable>: NIOScheduledCallbackHandler, Sendable {
        let attempt: Attempt<Value>
        func handleScheduledCallback(eventLoop: some EventLoop) { attempt.expire() }
    }

    /// Runs `work` for a request and answers it through `completion` once: with its result,
    /// or when `deadline` passed first (``Attempt/expire()``: the connection the work uses
    /// is closed, and the work cancelled, so it ends too). The operation is counted from
    /// begin() here to the answer (close() waits for it); the work from begin() to its end,
    /// answered or not: beyond ``PostgresStoreConfiguration/maximumRequestsInFlight`` of
    /// them a request is refused at once ("not written", queue full), so a server that
    /// stalls cannot make the instance hold an ever-growing pile of requests. Once closing,
    /// nothing starts.
    private func answerWithin<Value: Sendable>(
        _ deadline: Duration,
        completion: @escaping @Sendable (Result<Value, any Error>) -> Void,
        _ work: @escaping @Sendable (Attempt<Value>) async -> Result<Value, any Error>
    ) {
        if let refusal = begin() { return completion(.failure(LedgerUnavailable.notWritten(refusal))) }
        let attempt = Attempt<Value>({ result in
            self.end()
            completion(result)
        }, onWorkEnded: { self.workEnded() })
        // The deadline is a timer on the event loop this request was read on (its answer is
        // written there too), not a sleeping Task: scheduling it from that loop and
        // cancelling it from anywhere are a heap insert and removal under a lock, with no
        // thread woken, where a Task.sleep per request cost a Task, a Dispatch timer and the
        // wake-ups of cancelling it. Called from no event loop (tests), it uses one of
        // postgres-nio's.
        let loop = MultiThreadedEventLoopGroup.currentEventLoop ?? deadlineLoop
        let watchdog = try? loop.scheduleCallback(in: TimeAmount(deadline), handler: Deadline(attempt: attempt))
        if watchdog == nil { attempt.expire() }  // the loop is shutting down: no deadline, no work
        attempt.setWork(Task {
            self.taskCount.add(1)
            attempt.answer(await work(attempt))
            watchdog?.cancel()
            attempt.endWork()
            self.taskCount.subtract(1)
        })
    }

    private func write(
        _ request: TransactionRequest, clientID: Int64, key: IdempotencyKey?, alreadyWaited: Duration = .zero, attempt: WriteAttempt
    ) async -> Result<TransactionReceipt, LedgerUnavailable> {
        let logger = self.logger
        // Like the SQLite store's write deadline: a write that waited this long (before this
        // process read it, and for a connection, all of them busy) is refused before it
        // begins, never committed late.
        let deadline = ContinuousClock.now + (configuration.writeDeadline - alreadyWaited)
        do {
            let receipt: TransactionReceipt = try await client.withConnection { connection -> TransactionReceipt in
                guard ContinuousClock.now < deadline else { throw LedgerUnavailable.notWritten(.deadlineExceeded) }
                keepalive.applyOnce(to: connection)
                try attempt.use(connection)
                defer { attempt.release() }
                // From here on the write may be committed: COMMIT runs inside the call, so
                // the deadline can no longer answer "not written" once it is sent.
                guard attempt.startCommit() else { throw LedgerUnavailable.notWritten(.deadlineExceeded) }
                return try await Self.call(request, clientID: clientID, key: key, at: configuration.wallClock(), on: connection, logger: logger)
            }
            return .success(receipt)
        } catch {
            return .failure(Self.unavailable(error, commitSent: attempt.commitSent))
        }
    }

    /// The whole write in one round trip: one `CALL` of the write procedure
    /// (``PostgresSchema/writeProcedureStatement``), sent as an unnamed statement (Parse,
    /// Bind, Describe, Execute, Sync in one flush; no named prepared statement, so it works
    /// behind PgBouncer in transaction mode). The procedure's own statements are planned
    /// once per connection by PL/pgSQL and reused. It commits (or, when nothing was written,
    /// rolls back) before its one row is sent, so a row means the COMMIT returned.
    private static func call(
        _ request: TransactionRequest, clientID: Int64, key: IdempotencyKey?, at now: Int64,
        on connection: PostgresConnection, logger: Logger
    ) async throws -> TransactionReceipt {
        let fingerprint: String? = key.map { _ in IdempotencyRecord.fingerprint(of: request, clientID: clientID) }
        let rows = try await connection.send(
            """
            CALL crebitos_write_v1(\(clientID), \(request.balanceDelta), \(request.amount), \(request.kind.rawValue), \(request.description), \
            \(now), \(TransactionRequest.maximumAmount), \(key?.value), \(fingerprint))
            """,
            logger: logger
        )
        guard let row = rows.first else { throw PostgresStoreError.corrupt("\(PostgresSchema.writeProcedure) returned no row") }
        let (name, limit, balance, replayed) = try row.decode((String, Int64?, Int64?, Bool).self)
        if name == "idempotency_key_reused" { return TransactionReceipt(outcome: .idempotencyKeyReused) }
        guard let outcome = IdempotencyRecord.decode(name: name, limit: limit, balance: balance) else {
            throw PostgresStoreError.corrupt("\(PostgresSchema.writeProcedure) answered \(name)")
        }
        return TransactionReceipt(outcome: outcome, isReplay: replayed)
    }

    /// What a failed write promises the client.
    ///
    /// Before the write's `CALL` was sent nothing can have been committed, whatever the
    /// error. After it, only an error answer whose SQLSTATE means the transaction was rolled
    /// back says "not written" (``rolledBack(sqlState:)``); anything else (the connection
    /// lost, a pooler's own error, a shutdown, a statement_timeout after the procedure's
    /// COMMIT, an internal error) leaves the outcome unknown.
    static func unavailable(_ error: any Error, commitSent: Bool) -> LedgerUnavailable {
        if let error = error as? LedgerUnavailable { return error }
        if !commitSent || error is ConnectionClosedBeforeSend {
            if let error = error as? PSQLError, error.code == .poolClosed { return .notWritten(.shuttingDown) }
            return .notWritten(.transactionFailed)
        }
        if let error = error as? PSQLError, error.code == .server, rolledBack(sqlState: error.serverInfo?[.sqlState]) {
            return .notWritten(.transactionFailed)
        }
        return .outcomeUnknown
    }

    /// Whether an error answer to the write's `CALL` with this SQLSTATE means its
    /// transaction was rolled back:
    /// - ``PostgresSchema/rolledBackBeforeCommit``: the procedure failed before its COMMIT
    ///   (any error of its body, a lock_timeout or statement_timeout included);
    /// - class 40 (transaction rollback: serialization failure, deadlock, ...) except 40003
    ///   (statement completion unknown), and class 23 (a deferred constraint checked at
    ///   COMMIT): the COMMIT itself failed.
    /// A pooler or proxy in between may answer with errors of its own (08xxx, 57xxx, XX000)
    /// after the server committed, and a statement_timeout or cancel that lands after the
    /// procedure's COMMIT is a 57014 of a committed write: those, and everything else, are
    /// not taken as a rollback.
    static func rolledBack(sqlState: String?) -> Bool {
        guard let sqlState, sqlState.utf8.count == 5 else { return false }
        if sqlState == PostgresSchema.rolledBackBeforeCommit { return true }
        if sqlState == "40003" { return false }
        return sqlState.hasPrefix("40") || sqlState.hasPrefix("23")
    }

    // MARK: Reads

    /// One query, so one snapshot: the client joined with its newest transactions.
    public func statement(
        forClient clientID: Int64,
        completion: @escaping @Sendable (Result<AccountStatement?, any Error>) -> Void
    ) {
        answerWithin(configuration.writeDeadline * 2, completion: completion) { attempt in
            do {
                return .success(try await self.readStatement(forClient: clientID, attempt: attempt))
            } catch {
                return .failure(error)
            }
        }
    }

    private func readStatement(forClient clientID: Int64, attempt: Attempt<AccountStatement?>) async throws -> AccountStatement? {
        let rows = try await client.withConnection { connection in
            self.keepalive.applyOnce(to: connection)
            try attempt.use(connection)
            defer { attempt.release() }
            return try await connection.send(
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
            )
        }
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

    /// Counts a request in, or says why it is refused.
    private func begin() -> LedgerUnavailable.Reason? {
        let limit = configuration.maximumRequestsInFlight
        return state.withLock { state in
            guard !state.isClosing else { return .shuttingDown }
            guard state.working < limit else { return .queueFull }
            state.operations += 1
            state.working += 1
            return nil
        }
    }

    private func end() {
        state.withLock { $0.operations -= 1 }
    }

    private func workEnded() {
        state.withLock { $0.working -= 1 }
    }

    /// Requests not answered yet, or answered but their work not ended nor let go by the
    /// deadline: what ``PostgresStoreConfiguration/maximumRequestsInFlight`` bounds.
    public var requestsInFlight: Int {
        state.withLock { $0.working }
    }

    /// Request tasks still running, let go or not (for tests: after a stall, it must come
    /// back to zero: no task waits forever on a query that will never return).
    var tasksRunning: Int { taskCount.value }

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

extension PostgresConnection {
    /// Runs `query` and collects its rows, failing (never hanging) when the connection is
    /// closed, however the close and the send interleave.
    ///
    /// postgres-nio writes a query to its channel without a write promise: a query written
    /// after the channel's handlers were removed (it was closed) is dropped, and its caller
    /// waits forever. The deadline closes a connection from another thread
    /// (``PostgresLedger/Attempt/expire()``), so a check of `isClosed` before `query` is not
    /// enough: the close can land between the two. Here the check and the write run in one
    /// turn of the connection's event loop, where nothing can close the channel in between:
    /// either the channel was closed (the query fails at once) or the write reached
    /// postgres-nio's handler, which fails every query it holds when the channel closes.
    func send(_ query: PostgresQuery, logger: Logger, file: String = #fileID, line: Int = #line) async throws -> [PostgresRow] {
        let eventLoop = self.eventLoop
        return try await eventLoop.flatSubmit { () -> EventLoopFuture<PostgresQueryResult> in
            guard !self.isClosed else { return eventLoop.makeFailedFuture(ConnectionClosedBeforeSend()) }
            return self.query(query, logger: logger, file: file, line: line)
        }.get().rows
    }
}

/// A query was not sent: its connection had been closed (by the deadline, or the server).
/// Nothing was sent, so nothing can have been written, even when the caller had already
/// counted its write's `CALL` as sent.
struct ConnectionClosedBeforeSend: Error {}

final class Counter: Sendable {
    private let count = Atomic<Int>(0)
    func add(_ n: Int) { count.add(n, ordering: .relaxed) }
    func subtract(_ n: Int) { count.subtract(n, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
