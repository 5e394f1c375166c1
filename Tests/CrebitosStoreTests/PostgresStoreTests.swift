import CrebitosLedger
@testable import CrebitosPostgres
import CrebitosTestSupport
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

/// What only the PostgreSQL store has: its answer when a client's row stays locked by
/// someone else (a frozen instance in the middle of a transaction, a person in psql).
struct PostgresStoreTests {
    @Test func aWriteWaitingPastTheDeadlineForARowLockIsRolledBackAndAnsweredNotWritten() async throws {
        let url = try await TemporaryPostgres.freshDatabaseURL()
        // Long enough that the unblocked writes below meet it on a busy machine.
        let ledger = try await PostgresLedger.open(PostgresStoreConfiguration(url: try PostgresURL(url), writeDeadline: .seconds(1)))
        let outsider = try await connect(to: url)
        do {
            try await outsider.query("BEGIN", logger: logger)
            try await outsider.query("SELECT saldo FROM clientes WHERE id = 1 FOR UPDATE", logger: logger)
            // Either the server's statement_timeout rolls it back (transactionFailed) or, on
            // a machine too busy for the server's answer to come first, the store's own
            // deadline answers (deadlineExceeded): both are "not written", which is the rule.
            let refusal = await #expect(throws: LedgerUnavailable.self) {
                try await ledger.apply(TransactionRequest(amount: 5, kind: .credit, description: "blocked"), toClient: 1)
            }
            #expect(refusal == .notWritten(.transactionFailed) || refusal == .notWritten(.deadlineExceeded))
            // Other clients' rows are not locked: their writes go on meanwhile.
            let other = try await ledger.apply(TransactionRequest(amount: 5, kind: .credit, description: "free"), toClient: 2)
            #expect(other.outcome == .applied(Balance(limit: 80_000, balance: 5)))
            try await outsider.query("ROLLBACK", logger: logger)
        } catch {
            try? await outsider.close()
            await ledger.close()
            throw error
        }
        try await outsider.close()
        let after = try await ledger.apply(TransactionRequest(amount: 7, kind: .credit, description: "after"), toClient: 1)
        #expect(after.outcome == .applied(Balance(limit: 100_000, balance: 7)), "the refused write was not stored")
        #expect(try await ledger.audit().map(\.transactionCount) == [1, 1, 0, 0, 0])
        await ledger.close()
    }

    @Test func errorsBeforeCommitMeanNotWrittenAndALostCommitMeansUnknown() {
        struct ConnectionLost: Error {}
        #expect(PostgresLedger.unavailable(ConnectionLost(), commitSent: false) == .notWritten(.transactionFailed))
        #expect(PostgresLedger.unavailable(ConnectionLost(), commitSent: true) == .outcomeUnknown)
    }

    /// A write whose query never returns is answered by its deadline (the PostgreSQL server
    /// killed under load left writes unanswered forever, docs/FAULTS.md finding 5); the
    /// answer and the COMMIT can never contradict each other.
    @Test func aWriteAnsweredByItsDeadlineCanNoLongerCommit() {
        let (attempt, answers) = recordedAttempt()
        attempt.expire()
        #expect(!attempt.startCommit())
        attempt.answer(.success(TransactionReceipt(outcome: .unknownClient)))
        attempt.expire()
        expectOneAnswer(answers.all, failingWith: .notWritten(.deadlineExceeded))
    }

    @Test func aWriteWhoseCommitWasSentIsAnsweredOutcomeUnknownByItsDeadline() {
        let (attempt, answers) = recordedAttempt()
        #expect(attempt.startCommit())
        attempt.expire()
        attempt.answer(.success(TransactionReceipt(outcome: .unknownClient)))
        expectOneAnswer(answers.all, failingWith: .outcomeUnknown)
    }

    @Test func aWriteThatFinishesFirstIsAnsweredWithItsResultOnly() {
        let (attempt, answers) = recordedAttempt()
        #expect(attempt.startCommit())
        attempt.answer(.success(TransactionReceipt(outcome: .unknownClient)))
        attempt.expire()
        let given = answers.all
        #expect(given.count == 1)
        #expect((try? given.first?.get())?.outcome == .unknownClient)
    }

    // MARK: Round trips

    /// Every write variant is one round trip to the server (one query, answered by one
    /// ReadyForQuery), so that the client's row lock lasts one statement and the WAL flush:
    /// it was 3 (BEGIN, the statement, COMMIT), 4 for a refusal, 4 to 7 with a key.
    /// Counted from postgres-nio's own trace of the queries it sends.
    @Test func everyWriteVariantIsOneRoundTrip() async throws {
        let url = try await TemporaryPostgres.freshDatabaseURL()
        let trace = QueriesSent()
        var logger = Logger(label: "crebitos.round-trips") { _ in trace }
        logger.logLevel = .trace
        let ledger = try await PostgresLedger.open(
            PostgresStoreConfiguration(url: try PostgresURL(url), maximumConnections: 1), logger: logger)
        // The pool's one connection, made and started before counting.
        _ = try await ledger.apply(TransactionRequest(amount: 1, kind: .credit, description: "warm"), toClient: 5)
        let key = try #require(IdempotencyKey("rt-1"))
        let refusedKey = try #require(IdempotencyKey("rt-2"))
        let variants: [(String, TransactionRequest, Int64, IdempotencyKey?, TransactionReceipt)] = [
            ("credit", try TransactionRequest(amount: 10, kind: .credit, description: "c"), 1, nil,
             TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: 10)))),
            ("debit", try TransactionRequest(amount: 4, kind: .debit, description: "d"), 1, nil,
             TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: 6)))),
            ("debit over the limit", try TransactionRequest(amount: 100_007, kind: .debit, description: "d"), 1, nil,
             TransactionReceipt(outcome: .insufficientLimit(Balance(limit: 100_000, balance: 6)))),
            ("unknown client", try TransactionRequest(amount: 1, kind: .credit, description: "c"), 6, nil,
             TransactionReceipt(outcome: .unknownClient)),
            ("key, first use", try TransactionRequest(amount: 3, kind: .credit, description: "k"), 2, key,
             TransactionReceipt(outcome: .applied(Balance(limit: 80_000, balance: 3)))),
            ("key, replay", try TransactionRequest(amount: 3, kind: .credit, description: "k"), 2, key,
             TransactionReceipt(outcome: .applied(Balance(limit: 80_000, balance: 3)), isReplay: true)),
            ("key, reused with another body", try TransactionRequest(amount: 4, kind: .credit, description: "k"), 2, key,
             TransactionReceipt(outcome: .idempotencyKeyReused)),
            ("key, refused debit", try TransactionRequest(amount: 80_004, kind: .debit, description: "k"), 2, refusedKey,
             TransactionReceipt(outcome: .insufficientLimit(Balance(limit: 80_000, balance: 3)))),
            ("key, refused debit replayed", try TransactionRequest(amount: 80_004, kind: .debit, description: "k"), 2, refusedKey,
             TransactionReceipt(outcome: .insufficientLimit(Balance(limit: 80_000, balance: 3)), isReplay: true)),
        ]
        for (name, request, client, key, expected) in variants {
            let before = trace.value
            let receipt = try await ledger.apply(request, toClient: client, idempotencyKey: key)
            #expect(receipt == expected, "\(name)")
            #expect(trace.value - before == 1, "\(name): \(trace.value - before) round trips")
        }
        #expect(try await ledger.audit().map(\.transactionCount) == [2, 1, 0, 0, 1])
        await ledger.close()
    }

    /// The pool's connections have TCP keepalive (and TCP_USER_TIMEOUT), so a connection to
    /// a host that vanished is closed by the kernel in about 25 s, not 15 minutes.
    @Test func thePoolsConnectionsHaveTCPKeepalive() async throws {
        let url = try await TemporaryPostgres.freshDatabaseURL()
        let ledger = try await PostgresLedger.open(PostgresStoreConfiguration(url: try PostgresURL(url), maximumConnections: 1))
        _ = try await ledger.apply(TransactionRequest(amount: 1, kind: .credit, description: "k"), toClient: 1)
        // The same, only, connection.
        let options = try await ledger.client.withConnection { connection in
            let channel = try #require(PostgresKeepalive.channel(of: connection), "postgres-nio's connection has no channel")
            return try await PostgresKeepalive.current(on: channel)
        }
        #expect(options.first != 0, "SO_KEEPALIVE")
        #expect(Array(options.dropFirst()) == [10, 5, 3, 25_000], "TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT")
        await ledger.close()
    }

    /// The deadline closes a connection from another thread while the work may be about to
    /// send a query on it (``PostgresLedger/Attempt/expire()``). However the two interleave,
    /// the query must fail: postgres-nio drops a query written to a channel already closed
    /// without ever failing it, and a check of `isClosed` just before sending left a window
    /// in which the work then waited forever (a task left behind after every stall).
    @Test(.timeLimit(.minutes(1)))
    func aQuerySentWhileItsConnectionIsClosedFailsAndNeverHangs() async throws {
        let url = try await TemporaryPostgres.freshDatabaseURL()
        let ledger = try await PostgresLedger.open(PostgresStoreConfiguration(url: try PostgresURL(url), maximumConnections: 4))
        let rounds = 1_000
        let ended = Counter()
        for round in 0..<rounds {
            try await ledger.client.withConnection { connection in
                // Close at once, or after spinning a little, so the close lands at every
                // point of the send.
                let spin = round % 40
                let closer = Thread {
                    var x = 0
                    for i in 0..<(spin * 50) { x &+= i }
                    if x == -1 { print(x) }
                    connection.close().whenComplete { _ in }
                }
                closer.start()
                // Not awaited here: a query that hangs must not hang the test, only fail it.
                Task.detached {
                    _ = try? await connection.send("SELECT 1", logger: ledger.logger)
                    ended.add(1)
                }
                _ = try? await connection.closeFuture.get()
            }
        }
        for _ in 0..<50 where ended.value < rounds {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(ended.value == rounds, "queries that never ended")
        await ledger.close()
    }

    // MARK: Errors after COMMIT was sent

    /// An error answer to COMMIT means "rolled back" only when its SQLSTATE says so
    /// (class 40, transaction rollback; class 23, a deferred constraint). Any other error
    /// (a pooler's own, a shutdown, an internal error) leaves the outcome unknown: it was
    /// answered "not written" before, a promise nobody could keep. The error here comes
    /// from a deferred trigger the test adds, which fails at COMMIT with the given code.
    @Test(arguments: [
        ("40001", LedgerUnavailable.notWritten(.transactionFailed)),
        ("40P01", .notWritten(.transactionFailed)),
        ("23505", .notWritten(.transactionFailed)),
        ("40003", .outcomeUnknown),
        ("XX000", .outcomeUnknown),
        ("57P01", .outcomeUnknown),
        ("08006", .outcomeUnknown),
        ("58030", .outcomeUnknown),
    ])
    func anErrorAnswerToCommitIsNotWrittenOnlyWhenItsSQLStateMeansRollback(sqlState: String, expected: LedgerUnavailable) async throws {
        let url = try await TemporaryPostgres.freshDatabaseURL()
        let ledger = try await PostgresLedger.open(PostgresStoreConfiguration(url: try PostgresURL(url), writeDeadline: .seconds(30)))
        let outsider = try await connect(to: url)
        do {
            try await outsider.query(PostgresQuery(unsafeSQL: """
                CREATE FUNCTION fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'refused at commit' USING ERRCODE = '\(sqlState)'; END $$
                """), logger: logger)
            try await outsider.query("""
                CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON transacoes
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_at_commit()
                """, logger: logger)
            let refusal = await #expect(throws: LedgerUnavailable.self) {
                try await ledger.apply(TransactionRequest(amount: 5, kind: .credit, description: "refused"), toClient: 1)
            }
            #expect(refusal == expected)
        } catch {
            try? await outsider.close()
            await ledger.close()
            throw error
        }
        try await outsider.close()
        #expect(try await ledger.audit().map(\.transactionCount) == [0, 0, 0, 0, 0])
        await ledger.close()
    }

    /// Which SQLSTATEs in an error answer to COMMIT mean "rolled back, nothing written".
    @Test func onlyRollbackClassesOfAnErrorAnswerToCommitMeanNotWritten() {
        for code in ["40000", "40001", "40002", "40P01", "23000", "23505", "23503", "23514", "CR000"] {
            #expect(PostgresLedger.rolledBack(sqlState: code), "\(code)")
        }
        // 40003 is "statement completion unknown"; 08 connection, 57 operator intervention
        // (a shutdown, a pooler's own timeouts), 53 resources, 58 system, XX internal: unknown.
        for code in ["40003", "08000", "08006", "08P01", "57P01", "57P02", "57014", "53100", "58030", "XX000", "25P02", "42601", "", "4000", nil] as [String?] {
            #expect(!PostgresLedger.rolledBack(sqlState: code), "\(String(describing: code))")
        }
        struct ConnectionLost: Error {}
        // Before COMMIT was sent nothing can have been committed, whatever the error.
        #expect(PostgresLedger.unavailable(ConnectionLost(), commitSent: false) == .notWritten(.transactionFailed))
        #expect(PostgresLedger.unavailable(CancellationError(), commitSent: false) == .notWritten(.transactionFailed))
        #expect(PostgresLedger.unavailable(CancellationError(), commitSent: true) == .outcomeUnknown)
    }

    // MARK: Start-up, session settings

    /// Start-up used to run `CREATE INDEX IF NOT EXISTS`, which takes a ShareLock on the
    /// table even when the index exists: an instance (re)starting while any write
    /// transaction was open waited for it, and every write after it queued behind that
    /// lock, until statement_timeout failed the start. Now what exists is not touched.
    @Test func anInstanceStartsWhileWritesAreOpenWithoutWaitingForThemOrBlockingThem() async throws {
        let url = try await TemporaryPostgres.freshDatabaseURL()
        let first = try await PostgresLedger.open(PostgresStoreConfiguration(url: try PostgresURL(url), writeDeadline: .seconds(1)))
        let outsider = try await connect(to: url)
        do {
            // A write of another instance, not committed yet: it holds RowExclusiveLock on
            // transacoes, which a ShareLock waits for.
            try await outsider.query("BEGIN", logger: logger)
            try await outsider.query(
                "INSERT INTO transacoes (cliente_id, valor, tipo, descricao, realizada_em) VALUES (3, 1, 'c', 'open', 0)", logger: logger)
            let second = try await PostgresLedger.open(PostgresStoreConfiguration(url: try PostgresURL(url), writeDeadline: .seconds(1)))
            let written = try await second.apply(TransactionRequest(amount: 5, kind: .credit, description: "second"), toClient: 1)
            #expect(written.outcome == .applied(Balance(limit: 100_000, balance: 5)))
            let alongside = try await first.apply(TransactionRequest(amount: 5, kind: .credit, description: "first"), toClient: 2)
            #expect(alongside.outcome == .applied(Balance(limit: 80_000, balance: 5)))
            await second.close()
            try await outsider.query("ROLLBACK", logger: logger)
        } catch {
            try? await outsider.close()
            await first.close()
            throw error
        }
        try await outsider.close()
        #expect(try await first.audit().map(\.transactionCount) == [1, 1, 0, 0, 0])
        await first.close()
    }

    /// A row lock held by someone else (a frozen instance mid-transaction) is given up
    /// after `lock_timeout`, a few hundred ms, not after the whole statement deadline:
    /// the write is refused ("not written") while the lock is still held.
    @Test(.timeLimit(.minutes(1)))
    func aWriteWaitingForARowLockGivesUpAfterTheLockTimeout() async throws {
        let url = try await TemporaryPostgres.freshDatabaseURL()
        var configuration = PostgresStoreConfiguration(url: try PostgresURL(url), writeDeadline: .seconds(600))
        configuration.lockTimeout = .milliseconds(200)
        let ledger = try await PostgresLedger.open(configuration)
        let outsider = try await connect(to: url)
        do {
            // Behind a pooler (scripts/pooler-test) start-up parameters are dropped and the
            // role's lock_timeout applies: the write is still refused while the lock is held.
            if ProcessInfo.processInfo.environment["CREBITOS_TEST_POSTGRES_POOLER"] == nil {
                let shown = try await ledger.client.query("SHOW lock_timeout").collect()
                #expect(try shown.first?.decode(String.self) == "200ms")
            }
            try await outsider.query("BEGIN", logger: logger)
            try await outsider.query("SELECT saldo FROM clientes WHERE id = 1 FOR UPDATE", logger: logger)
            for key in [nil, try #require(IdempotencyKey("k1"))] {
                let refusal = await #expect(throws: LedgerUnavailable.self) {
                    try await ledger.apply(TransactionRequest(amount: 5, kind: .credit, description: "blocked"), toClient: 1, idempotencyKey: key)
                }
                #expect(refusal == .notWritten(.transactionFailed))
            }
            try await outsider.query("ROLLBACK", logger: logger)
        } catch {
            try? await outsider.close()
            await ledger.close()
            throw error
        }
        try await outsider.close()
        #expect(try await ledger.audit().map(\.transactionCount) == [0, 0, 0, 0, 0])
        await ledger.close()
    }

    /// Every write runs in READ COMMITTED whatever the database's default: under
    /// REPEATABLE READ (set by a DBA with ALTER DATABASE) a write that waited for a
    /// client's row lock failed with a serialization error once the other transaction
    /// committed, where READ COMMITTED re-reads the row and applies it.
    @Test func writesStayReadCommittedWhenTheDatabaseDefaultIsStricter() async throws {
        let url = try await TemporaryPostgres.freshDatabaseURL()
        let outsider = try await connect(to: url)
        let database = try #require(URLComponents(string: url)).path.dropFirst()
        try await outsider.query(PostgresQuery(unsafeSQL: "ALTER DATABASE \(database) SET default_transaction_isolation = 'repeatable read'"), logger: logger)
        // The setting applies to connections made from now on: the ledger's. The lock
        // wait below lasts as long as the test takes to see it, so no lock_timeout.
        var configuration = PostgresStoreConfiguration(url: try PostgresURL(url), writeDeadline: .seconds(30))
        configuration.lockTimeout = .seconds(30)
        let ledger = try await PostgresLedger.open(configuration)
        // Outside the outsider's transaction, whose view of pg_stat_activity is frozen.
        let watcher = try await connect(to: url)
        do {
            for key in [nil, try #require(IdempotencyKey("k1"))] {
                try await outsider.query("BEGIN", logger: logger)
                try await outsider.query("UPDATE clientes SET saldo = saldo + 1 WHERE id = 1", logger: logger)
                async let blocked = ledger.apply(TransactionRequest(amount: 5, kind: .credit, description: "waited"), toClient: 1, idempotencyKey: key)
                try await waitUntilAQueryWaitsForALock(on: watcher)
                try await outsider.query("COMMIT", logger: logger)
                let outcome = try await blocked.outcome
                guard case .applied = outcome else {
                    Issue.record("the write that waited for the row lock was answered \(outcome)")
                    continue
                }
            }
        } catch {
            try? await outsider.close()
            try? await watcher.close()
            await ledger.close()
            throw error
        }
        try await outsider.close()
        try await watcher.close()
        let audit = try await ledger.audit()
        #expect(audit.first?.balance == 12)
        await ledger.close()
    }

    /// `sslmode` as libpq reads it: require encrypts without checking the certificate,
    /// verify-ca and verify-full check it against `sslrootcert` (or the system's CAs, which
    /// do not know this self-signed one), disable does not encrypt.
    @Test func sslmodeDecidesWhetherAndHowTheConnectionsAreEncrypted() async throws {
        let server = try TemporaryPostgres.Dedicated(tls: true)
        defer { server.stop() }
        let url = try await server.freshDatabaseURL()
        func encrypted(_ parameters: String) async throws -> Bool {
            let ledger = try await PostgresLedger.open(PostgresStoreConfiguration(url: try PostgresURL(url + parameters)))
            do {
                let written = try await ledger.apply(TransactionRequest(amount: 1, kind: .credit, description: "tls"), toClient: 1)
                #expect(written.outcome != .unknownClient)
                let rows = try await ledger.client.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").collect()
                await ledger.close()
                return try rows.first?.decode(Bool.self) ?? false
            } catch {
                await ledger.close()
                throw error
            }
        }
        #expect(try await !encrypted(""))
        #expect(try await !encrypted("?sslmode=disable"))
        #expect(try await encrypted("?sslmode=prefer"))
        #expect(try await encrypted("?sslmode=require"))
        #expect(try await encrypted("?sslmode=verify-ca&sslrootcert=\(server.certificatePath)"))
        #expect(try await encrypted("?sslmode=verify-full&sslrootcert=\(server.certificatePath)"))
        await #expect(throws: (any Error).self, "a certificate no trusted CA signed is refused") {
            _ = try await encrypted("?sslmode=verify-full")
        }
    }

    private func waitUntilAQueryWaitsForALock(on connection: PostgresConnection) async throws {
        for _ in 0..<3_000 {
            let rows = try await connection.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'", logger: logger
            ).collect()
            if try rows.first?.decode(Int64.self) ?? 0 > 0 { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("no query of the ledger waited for the row lock")
    }

    private let logger = Logger(label: "test")

    /// A connection of its own to the database at `url` (someone else: another instance, a person in psql).
    private func connect(to url: String) async throws -> PostgresConnection {
        let components = try #require(URLComponents(string: url))
        return try await PostgresConnection.connect(
            configuration: .init(
                host: try #require(components.host), port: components.port ?? 5432, username: components.user ?? "postgres",
                password: components.password, database: String(components.path.dropFirst()), tls: .disable),
            id: 99, logger: logger)
    }

    /// A write attempt whose every answer is recorded, to see how many it gave and which.
    private func recordedAttempt() -> (PostgresLedger.WriteAttempt, AnswerLog) {
        let answers = AnswerLog()
        return (PostgresLedger.WriteAttempt { answers.record($0) }, answers)
    }

    private func expectOneAnswer(
        _ given: [Result<TransactionReceipt, any Error>], failingWith expected: LedgerUnavailable,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(given.count == 1, sourceLocation: sourceLocation)
        if case .failure(let error as LedgerUnavailable)? = given.first {
            #expect(error == expected, sourceLocation: sourceLocation)
        } else {
            Issue.record("expected \(expected), got \(String(describing: given.first))", sourceLocation: sourceLocation)
        }
    }
}

private final class AnswerLog: Sendable {
    private let given = Mutex<[Result<TransactionReceipt, any Error>]>([])
    func record(_ answer: Result<TransactionReceipt, any Error>) { given.withLock { $0.append(answer) } }
    var all: [Result<TransactionReceipt, any Error>] { given.withLock { $0 } }
}

/// Counts the queries postgres-nio sends, from its trace of the actions its connection runs
/// (at trace level): each is one Parse/Bind/Describe/Execute/Sync exchange, one round trip.
/// (Its trace of the ReadyForQuery it receives would do too, but arrives after the query's
/// answer, at CommandComplete: a count read right after the answer could miss it.)
private final class QueriesSent: LogHandler, @unchecked Sendable {
    private let count = Mutex(0)
    var value: Int { count.withLock { $0 } }
    var metadata: Logger.Metadata {
        get { [:] }
        set {}
    }
    var metadataProvider: Logger.MetadataProvider? {
        get { nil }
        set {}
    }
    var logLevel: Logger.Level {
        get { .trace }
        set {}
    }
    subscript(metadataKey _: String) -> Logger.Metadata.Value? {
        get { nil }
        set {}
    }
    func log(event: LogEvent) {
        guard event.message.description == "Run action",
              let action = event.metadata?["psql_connection_action"]?.description,
              ["sendParseDescribeBindExecuteSync", "sendBindExecuteSync", "sendParseDescribeSync"].contains(where: action.hasPrefix)
        else { return }
        count.withLock { $0 += 1 }
    }
}
