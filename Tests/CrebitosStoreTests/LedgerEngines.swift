import CrebitosLedger
@testable import CrebitosPostgres
@testable import CrebitosStore
import CrebitosTestSupport
import GRDB
import Logging
import PostgresNIO
import ServiceLifecycle

/// The engines the ledger runs on. ``LedgerBehaviourTests`` runs every test on each: SQLite
/// on a file in a temporary directory, PostgreSQL on a database of its own on the test
/// server (``TemporaryPostgres``).
enum Engine: String, CaseIterable, Sendable, CustomStringConvertible {
    case sqlite
    case postgres

    var description: String { rawValue }
}

/// What the behaviour tests may change in a store's configuration, the same on both engines.
struct LedgerOptions: Sendable {
    var idempotencyRetention: Duration = .seconds(24 * 60 * 60)
    var idempotencyCleanupInterval: Duration = .seconds(60)
    var wallClock: (@Sendable () -> Int64)?
    /// Far above the server's 2 s: these tests are about the ledger's rules and snapshots,
    /// not its deadline (WritePathFaultTests and PostgresStoreTests test that), and a CI
    /// machine busy with other work must not turn a queue of 400 writes into refusals.
    var writeDeadline: Duration = .seconds(30)
}

/// A ledger under test: the ``Ledger`` itself, and what the tests look at beside it (the
/// audit, the idempotency records), whichever engine holds it.
final class TestLedger: Sendable {
    enum Store: Sendable {
        case sqlite(SQLiteLedger)
        case postgres(PostgresLedger)
    }

    /// Where the data lives, to open more ledgers on it (another instance, a restart).
    enum Place: Sendable {
        case sqlite(TemporaryDirectory)
        case postgres(url: String)
    }

    let store: Store
    let place: Place
    let options: LedgerOptions

    private init(store: Store, place: Place, options: LedgerOptions) {
        self.store = store
        self.place = place
        self.options = options
    }

    /// A ledger on a new, empty database.
    static func fresh(_ engine: Engine, options: LedgerOptions = LedgerOptions()) async throws -> TestLedger {
        try await open(on: newPlace(engine), options: options)
    }

    static func newPlace(_ engine: Engine) async throws -> Place {
        switch engine {
        case .sqlite: .sqlite(try TemporaryDirectory())
        case .postgres: .postgres(url: try await TemporaryPostgres.freshDatabaseURL())
        }
    }

    /// A ledger on `place`, as another instance (or the same one after a restart) opens it.
    static func open(on place: Place, options: LedgerOptions = LedgerOptions()) async throws -> TestLedger {
        switch place {
        case .sqlite(let directory):
            var configuration = StoreConfiguration(
                path: directory.databasePath, idempotencyRetention: options.idempotencyRetention,
                idempotencyCleanupInterval: options.idempotencyCleanupInterval)
            configuration.writeDeadline = options.writeDeadline
            if let clock = options.wallClock { configuration.wallClock = clock }
            return TestLedger(store: .sqlite(try SQLiteLedger.open(configuration)), place: place, options: options)
        case .postgres(let url):
            var configuration = PostgresStoreConfiguration(
                url: try PostgresURL(url), idempotencyRetention: options.idempotencyRetention,
                idempotencyCleanupInterval: options.idempotencyCleanupInterval)
            configuration.writeDeadline = options.writeDeadline
            if let clock = options.wallClock { configuration.wallClock = clock }
            return TestLedger(store: .postgres(try await PostgresLedger.open(configuration)), place: place, options: options)
        }
    }

    var ledger: any Ledger {
        switch store {
        case .sqlite(let ledger): ledger
        case .postgres(let ledger): ledger
        }
    }

    func apply(_ request: TransactionRequest, toClient clientID: Int64, idempotencyKey: IdempotencyKey? = nil) async throws -> TransactionReceipt {
        try await ledger.apply(request, toClient: clientID, idempotencyKey: idempotencyKey)
    }

    func statement(forClient clientID: Int64) async throws -> AccountStatement? {
        try await ledger.statement(forClient: clientID)
    }

    func audit() async throws -> [ClientAudit] {
        switch store {
        case .sqlite(let ledger): try ledger.audit()
        case .postgres(let ledger): try await ledger.audit()
        }
    }

    func idempotencyRecordKeys() async throws -> [String] {
        switch store {
        case .sqlite(let ledger):
            return try await ledger.database.read { try String.fetchAll($0, sql: "SELECT key FROM idempotency_keys ORDER BY key") }
        case .postgres(let ledger):
            let rows = try await ledger.client.query("SELECT key FROM idempotency_keys ORDER BY key").collect()
            return try rows.map { try $0.decode(String.self) }
        }
    }

    /// Stores `count` records of client 2 created at `createdAt`, as if requests had made them.
    func insertIdempotencyRecords(count: Int, createdAt: Int64) async throws {
        switch store {
        case .sqlite(let ledger):
            try await ledger.database.write { db in
                for index in 0..<count {
                    try db.execute(
                        sql: "INSERT INTO idempotency_keys (cliente_id, key, request, outcome, limite, saldo, created_at) VALUES (2, ?, 'x', 'applied', 0, 0, ?)",
                        arguments: ["bulk\(index)", createdAt])
                }
            }
        case .postgres(let ledger):
            try await ledger.client.query(
                """
                INSERT INTO idempotency_keys (cliente_id, key, request, outcome, limite, saldo, created_at)
                SELECT 2, 'bulk' || n, 'x', 'applied', 0, 0, \(createdAt) FROM generate_series(0, \(Int64(count) - 1)) AS n
                """)
        }
    }

    /// The engine's cleanup of expired idempotency records, run once now.
    func deleteExpiredIdempotencyRecords() async throws -> Int {
        switch store {
        case .sqlite(let ledger):
            let cleaner = try #require(try ledger.backgroundServices(logger: Logger(label: "test")).compactMap { $0 as? IdempotencyKeyCleaner }.first)
            return try cleaner.deleteExpired()
        case .postgres(let ledger):
            let cleaner = try #require(ledger.backgroundServices(logger: Logger(label: "test")).compactMap { $0 as? PostgresIdempotencyKeyCleaner }.first)
            return try await cleaner.deleteExpired()
        }
    }

    func backgroundServices() throws -> [any Service] {
        switch store {
        case .sqlite(let ledger): try ledger.backgroundServices(logger: Logger(label: "test"))
        case .postgres(let ledger): ledger.backgroundServices(logger: Logger(label: "test"))
        }
    }

    func close() async throws {
        switch store {
        case .sqlite(let ledger): try ledger.close()
        case .postgres(let ledger): await ledger.close()
        }
    }
}

import Testing

/// Opens a fresh ledger on `engine`, runs `body` with it, and closes it (also when `body` throws).
func withLedger(
    _ engine: Engine, options: LedgerOptions = LedgerOptions(), _ body: (TestLedger) async throws -> Void
) async throws {
    let ledger = try await TestLedger.fresh(engine, options: options)
    do {
        try await body(ledger)
    } catch {
        try? await ledger.close()
        throw error
    }
    try await ledger.close()
}
