import CrebitosLedger
@testable import CrebitosStore
import GRDB
import XCTest

/// What only the SQLite store has: its journal mode, durability pragma and busy handler.
/// The ledger's behaviour (rules, limits, statements, idempotency, concurrency) is tested
/// on every engine in LedgerBehaviourTests.
final class SQLiteLedgerTests: XCTestCase {
    private var directory: TemporaryDirectory!
    private var ledger: SQLiteLedger!

    override func setUp() async throws {
        directory = try TemporaryDirectory()
        ledger = try SQLiteLedger.open(StoreConfiguration(path: directory.databasePath))
    }

    override func tearDown() async throws {
        try ledger.close()
        ledger = nil
        directory = nil
    }

    func testTheDatabaseIsInWALModeWithDurableCommitsByDefault() throws {
        let mode = try ledger.database.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
        XCTAssertEqual(mode, "wal")
        XCTAssertEqual(try ledger.writerSynchronousMode(), 2, "synchronous=FULL")
    }

    /// Diagnosis depends on it: a thread sampler or a profile must tell the writer's disk
    /// waits from the event loop's.
    func testTheWriterThreadCarriesItsOwnName() async throws {
        _ = try await ledger.apply(TransactionRequest(amount: 1, kind: .credit, description: "n"), toClient: 1)
        let names = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").map { task in
            try String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        XCTAssertTrue(names.contains(GroupCommitWriter.threadName), "threads: \(Set(names).sorted())")
    }

    func testNormalDurabilityIsApplied() throws {
        let other = try TemporaryDirectory()
        let normal = try SQLiteLedger.open(StoreConfiguration(path: other.databasePath, durability: .normal))
        defer { try? normal.close() }
        XCTAssertEqual(try normal.writerSynchronousMode(), 1, "synchronous=NORMAL")
    }

    func testBusyHandlerWaitsInSmallSteps() {
        XCTAssertEqual((0..<7).map { SQLiteLedger.busySleepMicroseconds(afterTries: $0) }, [50, 100, 200, 400, 800, 1000, 1000])
        // 10 s of waiting: 1.55 ms over the first 5 tries, then 1 ms per try.
        XCTAssertEqual(SQLiteLedger.busyTries(forMilliseconds: 10_000), 10_004)
    }
}

func XCTUnwrapAsync<T>(_ value: @autoclosure () async throws -> T?, file: StaticString = #filePath, line: UInt = #line) async throws -> T {
    let unwrapped = try await value()
    return try XCTUnwrap(unwrapped, file: file, line: line)
}
