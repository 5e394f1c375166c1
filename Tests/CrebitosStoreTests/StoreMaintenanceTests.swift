import CrebitosLedger
@testable import CrebitosStore
import Foundation
import GRDB
import Logging
import ServiceLifecycle
import Synchronization
import XCTest

/// SQLite-specific upkeep: schema migration, the cleanup's stop on shutdown, lock-file
/// identity, the WAL's size after a burst. (The expiry of idempotency records and
/// timestamps that never go backwards are tested on every engine in LedgerBehaviourTests.)
final class StoreMaintenanceTests: XCTestCase {
    private var directory: TemporaryDirectory!

    override func setUp() async throws {
        directory = try TemporaryDirectory()
    }

    /// XCTest keeps every test case object until the process ends: drop the directory
    /// (and its files) now rather than leave it behind.
    override func tearDown() async throws {
        directory = nil
    }

    private func credit(_ description: String, amount: Int64 = 10) throws -> TransactionRequest {
        try TransactionRequest(amount: amount, kind: .credit, description: description)
    }

    // MARK: Schema v2

    func testAVersionOneDatabaseMigratesToKeysPerClient() async throws {
        let v1 = try DatabaseQueue(path: directory.databasePath)
        try Schema.migrator.migrate(v1, upTo: "v1: clients, transactions, idempotency keys")
        try await v1.write { db in
            try db.execute(sql: """
                UPDATE clientes SET saldo = -700 WHERE id = 1;
                INSERT INTO transacoes (cliente_id, valor, tipo, descricao, realizada_em) VALUES (1, 700, 'd', 'once', 1);
                INSERT INTO idempotency_keys (key, cliente_id, request, outcome, limite, saldo, created_at)
                VALUES ('a', 1, '1 d 700 once', 'applied', 100000, -700, 1),
                       ('b', 9, '9 c 1 x', 'unknown_client', NULL, NULL, 1);
                """)
        }
        try v1.close()
        let ledger = try SQLiteLedger.open(StoreConfiguration(path: directory.databasePath))
        defer { try? ledger.close() }
        let key = try XCTUnwrap(IdempotencyKey("a"))
        let replay = try await ledger.apply(TransactionRequest(amount: 700, kind: .debit, description: "once"), toClient: 1, idempotencyKey: key)
        XCTAssertEqual(replay, TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: -700)), isReplay: true))
        let otherClient = try await ledger.apply(TransactionRequest(amount: 700, kind: .debit, description: "once"), toClient: 2, idempotencyKey: key)
        XCTAssertEqual(otherClient, TransactionReceipt(outcome: .applied(Balance(limit: 80_000, balance: -700))))
        let rows = try await ledger.database.read { db in
            try Row.fetchAll(db, sql: "SELECT cliente_id, key FROM idempotency_keys ORDER BY cliente_id").map { "\($0[0] as Int64)/\($0[1] as String)" }
        }
        XCTAssertEqual(rows, ["1/a", "2/a"], "the unknown client's v1 record was dropped")
        let index = try await ledger.database.read { try String.fetchOne($0, sql: "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'idempotency_keys'") }
        XCTAssertEqual(index, "idempotency_keys_por_idade")
    }

    // MARK: Expiry of idempotency records

    func testTheCleanupStopsAtOnceOnGracefulShutdown() async throws {
        // Its interval is a minute by default: the server's shutdown must not wait for it.
        let ledger = try SQLiteLedger.open(StoreConfiguration(path: directory.databasePath, idempotencyCleanupInterval: .seconds(3600)))
        defer { try? ledger.close() }
        let cleaner = try XCTUnwrap(try ledger.backgroundServices(logger: Logger(label: "test")).compactMap { $0 as? IdempotencyKeyCleaner }.first)
        let group = ServiceGroup(services: [cleaner], logger: Logger(label: "test"))
        let stopped = try await withThrowingTaskGroup(of: Bool.self) { tasks in
            tasks.addTask {
                try await group.run()
                return true
            }
            tasks.addTask {
                try await Task.sleep(for: .milliseconds(50))
                await group.triggerGracefulShutdown()
                // A bound for a broken test, far longer than stopping takes.
                try await Task.sleep(for: .seconds(30))
                return false
            }
            let first = try await tasks.next() ?? false
            tasks.cancelAll()
            return first
        }
        XCTAssertTrue(stopped, "the cleanup kept sleeping through the shutdown")
    }

    // MARK: Lock identity

    func testTwoSpellingsOfOneDatabaseLockTheSameFile() async throws {
        let first = try SQLiteLedger.open(StoreConfiguration(path: directory.databasePath))
        defer { try? first.close() }
        // A second directory whose rinha.db is a symlink to the first one's, reached
        // through a symlinked directory as well.
        let other = try TemporaryDirectory()
        let linkedDirectory = other.url.appendingPathComponent("linked-dir").path
        try FileManager.default.createSymbolicLink(atPath: linkedDirectory, withDestinationPath: directory.url.path)
        let linkedFile = other.url.appendingPathComponent("rinha.db").path
        try FileManager.default.createSymbolicLink(atPath: linkedFile, withDestinationPath: linkedDirectory + "/rinha.db")
        let second = try SQLiteLedger.open(StoreConfiguration(path: linkedFile, writeDeadline: .milliseconds(100)))
        defer { try? second.close() }
        XCTAssertEqual(second.configuration.lockPath, first.configuration.lockPath)
        XCTAssertEqual(
            CrossProcessLock.lockPath(forDatabase: linkedDirectory + "/not-yet.db"),
            CrossProcessLock.lockPath(forDatabase: directory.url.appendingPathComponent("not-yet.db").path),
            "a file that does not exist yet resolves through its directory")
        // The first instance's lock file held: the second instance must wait for it.
        let held = try LockFileHolder(lockPath: first.configuration.lockPath)
        do {
            _ = try await second.apply(credit("linked"), toClient: 1)
            XCTFail("wrote while the other instance held the lock")
        } catch let error as LedgerUnavailable {
            XCTAssertEqual(error, .notWritten(.deadlineExceeded))
        }
        held.release()
    }

    func testALockFileReplacedWhileInUseIsReopened() async throws {
        let ledger = try SQLiteLedger.open(StoreConfiguration(path: directory.databasePath, writeDeadline: .milliseconds(100)))
        defer { try? ledger.close() }
        _ = try await ledger.apply(credit("before"), toClient: 1)
        // Someone deletes the lock file; another instance starting now creates a new one
        // and holds it. Our descriptor still points at the deleted file, which nobody holds.
        let lockPath = ledger.configuration.lockPath
        try FileManager.default.removeItem(atPath: lockPath)
        let newcomer = try LockFileHolder(lockPath: lockPath)
        do {
            _ = try await ledger.apply(credit("during"), toClient: 1)
            XCTFail("wrote while the newcomer held the lock file now at the path")
        } catch let error as LedgerUnavailable {
            XCTAssertEqual(error, .notWritten(.deadlineExceeded))
        }
        newcomer.release()
        let after = try await ledger.apply(credit("after"), toClient: 1)
        XCTAssertEqual(after.outcome, .applied(Balance(limit: 100_000, balance: 20)))
    }

    func testLockFileErrorsNameThePathAndTheSystemsMessage() {
        let path = directory.url.appendingPathComponent("missing/dir/rinha.db.lock").path
        XCTAssertThrowsError(try CrossProcessLock(path: path)) { error in
            XCTAssertEqual("\(error)", "cannot use the lock file \(path): No such file or directory")
        }
    }

    // MARK: WAL size

    func testTheWALShrinksBackAfterABurst() async throws {
        let limit = 64 * 1024
        let ledger = try SQLiteLedger.open(StoreConfiguration(path: directory.databasePath, maximumQueuedWrites: 10_000, walSizeLimitBytes: limit))
        defer { try? ledger.close() }
        let walPath = directory.databasePath + "-wal"
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<3_000 {
                let request = try credit("b\(index)", amount: 1)
                group.addTask { _ = try await ledger.apply(request, toClient: Int64(index % 5 + 1)) }
            }
            try await group.waitForAll()
        }
        let peak = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: walPath)[.size] as? Int)
        XCTAssertGreaterThan(peak, limit, "the burst grew the WAL past the limit")
        _ = try await ledger.database.writeWithoutTransaction { try $0.checkpoint(.passive) }
        // The next commit restarts the WAL from its beginning and cuts the file back.
        _ = try await ledger.apply(credit("after"), toClient: 1)
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: walPath)[.size] as? Int)
        XCTAssertLessThanOrEqual(size, limit)
    }
}
