import CrebitosLedger
import GRDB
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The ledger on one SQLite file, shared safely by any number of processes.
///
/// - Writes go through a ``GroupCommitWriter``: one writer per process, which takes the
///   cross-process lock, opens a `BEGIN IMMEDIATE` transaction, applies every request
///   waiting at that moment and commits them together.
/// - Statements read one WAL snapshot on a pooled read connection, so they never wait
///   for writers and see each commit entirely or not at all.
///
/// Nothing here caches a balance: every answer comes from the file.
public final class SQLiteLedger: Ledger {
    public let configuration: StoreConfiguration
    /// The GRDB pool (one writer connection, several readers). Exposed for tests and
    /// tools that inspect the file; the ledger's own SQL stays in this module.
    public let database: DatabasePool
    let writer: GroupCommitWriter

    private init(configuration: StoreConfiguration, database: DatabasePool, writer: GroupCommitWriter) {
        self.configuration = configuration
        self.database = database
        self.writer = writer
    }

    /// Opens (creating if needed) the database, safe to call from several processes at
    /// the same moment on a fresh file: start-up runs under the cross-process lock, so
    /// exactly one of them creates the schema and the clients, and the others find it done.
    public static func open(_ configuration: StoreConfiguration) throws -> SQLiteLedger {
        let lock = try CrossProcessLock(path: configuration.lockPath)
        let busyBudget = BusyWaitBudget(busyTimeoutMilliseconds: configuration.busyTimeoutMilliseconds)
        let database = try lock.withExclusiveLock {
            // Opening a pool switches the file to WAL mode, which must not race with
            // another process doing the same, hence inside the lock.
            let database = try DatabasePool(
                path: configuration.path, configuration: grdbConfiguration(configuration, busyBudget: busyBudget))
            try Schema.migrator.migrate(database)
            return database
        }
        try applyDurability(configuration.durability, to: database)
        try database.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA journal_size_limit = \(configuration.walSizeLimitBytes)")
        }
        if case .background = configuration.checkpoint {
            try database.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA wal_autocheckpoint = \(WALCheckpointer.backstopPages)")
            }
        }
        let writer = GroupCommitWriter(
            database: database,
            lock: lock,
            busyBudget: busyBudget,
            configuration: configuration)
        return SQLiteLedger(configuration: configuration, database: database, writer: writer)
    }

    public func apply(
        _ request: TransactionRequest,
        toClient clientID: Int64,
        idempotencyKey: IdempotencyKey?,
        alreadyWaited: Duration,
        completion: @escaping @Sendable (Result<TransactionReceipt, any Error>) -> Void
    ) {
        // A request whose key is still in flight (queued, or in a batch being committed) is
        // queued behind it like any write: the one writer applies them in order, so it finds
        // the first's record and replays its answer, in this process as in the other
        // (docs/API.md, "Idempotency-Key").
        writer.submit(
            PendingWrite(request: request, clientID: clientID, idempotencyKey: idempotencyKey),
            alreadyWaited: alreadyWaited, completion: completion)
    }

    /// Answers before returning, on the calling thread (the connection's event loop), not
    /// on GRDB's reader queue: two SELECTs on a WAL snapshot take tens of microseconds and
    /// never wait for a writer, while a hand-off to another thread and back costs more
    /// than the read (docs/ARCHITECTURE.md, "Where an instance's CPU goes").
    public func statement(
        forClient clientID: Int64,
        completion: @escaping @Sendable (Result<AccountStatement?, any Error>) -> Void
    ) {
        completion(Result { try readStatement(forClient: clientID) })
    }

    private func readStatement(forClient clientID: Int64) throws -> AccountStatement? {
        // One read transaction = one snapshot: the balance and the entries agree.
        try database.read { db in
            guard let client = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT limite, saldo FROM clientes WHERE id = ?"),
                arguments: [clientID])
            else { return nil }
            let rows = try Row.fetchAll(
                db.cachedStatement(sql: """
                    SELECT valor, tipo, descricao, realizada_em FROM transacoes
                    WHERE cliente_id = ? ORDER BY id DESC LIMIT \(AccountStatement.maximumEntries)
                    """),
                arguments: [clientID])
            let entries = try rows.map { row in
                let kindText: String = row[1]
                guard let kind = TransactionKind(rawValue: kindText) else {
                    throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: "transacoes.tipo is \(kindText)")
                }
                return StatementEntry(amount: row[0], kind: kind, description: row[2], performedAt: row[3])
            }
            // Never earlier than the newest entry, even if the wall clock stepped back
            // (realizada_em does not follow it backwards).
            let takenAt = max(configuration.wallClock(), entries.first?.performedAt ?? .min)
            return AccountStatement(
                balance: Balance(limit: client[0], balance: client[1]),
                takenAt: takenAt,
                entries: entries)
        }
    }

    /// The background services to run beside the server: the cleanup of expired
    /// idempotency records, and the WAL checkpointer when
    /// ``CheckpointPolicy/background(interval:)`` is chosen.
    public func backgroundServices(logger: Logger) throws -> [any Service] {
        var services: [any Service] = [try IdempotencyKeyCleaner(database: database, configuration: configuration, logger: logger)]
        if case .background(let interval) = configuration.checkpoint {
            services.append(try WALCheckpointer(path: configuration.path, interval: interval, logger: logger))
        }
        return services
    }

    /// Refuses new writes (``LedgerUnavailable/Reason/shuttingDown``), waits until every
    /// queued write is committed or refused (each within its deadline), then closes every
    /// connection. Call it once the server stopped taking requests.
    public func close() throws {
        writer.close()
        try database.close()
    }

    private static func grdbConfiguration(_ configuration: StoreConfiguration, busyBudget: BusyWaitBudget) -> Configuration {
        var grdb = Configuration()
        grdb.label = "crebitos"
        grdb.maximumReaderCount = configuration.maximumReaders
        // The writer opens and ends its transactions itself (BEGIN IMMEDIATE ... COMMIT). If
        // a ROLLBACK ever fails (an I/O error), GRDB would otherwise stop the process with a
        // fatalError for the transaction left open; the writer ends it before its next BEGIN.
        grdb.allowsUnsafeTransactions = true
        // Our writers queue on the cross-process lock, so a writer only finds SQLite
        // busy when something outside it (the sqlite3 CLI, a backup, WAL recovery) holds
        // a lock. SQLite's default handler would then sleep 1, 2, 5, 10 ... ms between
        // tries; this one retries after 50 µs, doubling up to 1 ms, so a lock released
        // after 0.3 ms costs about 0.3 ms. How long it keeps trying is BusyWaitBudget's call:
        // the writer until its batch's deadline, a statement 200 ms.
        // https://www.sqlite.org/c3ref/busy_handler.html
        grdb.busyMode = .callback { tries in
            guard busyBudget.mayRetry(tries: tries) else { return false }
            usleep(UInt32(busySleepMicroseconds(afterTries: tries)))
            return true
        }
        return grdb
    }

    static func busySleepMicroseconds(afterTries tries: Int) -> Int {
        min(50 << min(tries, 5), 1_000)
    }

    static func busyTries(forMilliseconds milliseconds: Int) -> Int {
        var tries = 0
        var slept = 0
        while slept < milliseconds * 1_000 {
            slept += busySleepMicroseconds(afterTries: tries)
            tries += 1
        }
        return tries
    }

    /// GRDB opens WAL pools with `synchronous=NORMAL` after `prepareDatabase` runs, so
    /// the mode is set on the writer connection (the only one that commits) after opening,
    /// and read back: a 200 must mean what the configuration says.
    private static func applyDurability(_ durability: Durability, to database: DatabasePool) throws {
        try database.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = \(durability.pragmaValue)")
            let actual = try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1
            guard actual == durability.pragmaNumber else {
                throw StoreError.synchronousModeNotApplied(expected: durability.pragmaValue, actual: String(actual))
            }
        }
    }
}

extension SQLiteLedger {
    /// `PRAGMA synchronous` of the writer connection, as SQLite reports it (1 NORMAL, 2 FULL).
    public func writerSynchronousMode() throws -> Int {
        try database.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }
}

extension SQLiteLedger {
    /// The size of the WAL file in bytes (0 when there is none): how much the next
    /// checkpoint has to copy, and whether `journal_size_limit` keeps it bounded.
    public func walFileSize() -> Int {
        var status = stat()
        return stat(configuration.path + "-wal", &status) == 0 ? Int(status.st_size) : 0
    }
}
