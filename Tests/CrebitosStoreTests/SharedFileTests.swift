import CrebitosLedger
import CrebitosStore
import GRDB
import Synchronization
import XCTest

/// Two ledgers opened on one file behave like two processes: each has its own
/// connections, its own group-commit writer and its own descriptor of the lock file
/// (flock locks belong to the open file description, so they exclude each other even
/// in one process). Tests/CrebitosProcessTests does the same with real processes.
/// Concurrent opens of an empty database and writers on two instances are tested on
/// every engine in LedgerBehaviourTests; what is left here is SQLite's own.
final class SharedFileTests: XCTestCase {
    func testAWriterWaitsForTheOtherInstanceInsteadOfFailing() async throws {
        // Hold the write lock from outside our flock (as the sqlite3 CLI would) for
        // 200 ms: the busy handler waits it out in small steps and the write succeeds.
        let directory = try TemporaryDirectory()
        let ledger = try SQLiteLedger.open(StoreConfiguration(path: directory.databasePath))
        defer { try? ledger.close() }
        let outsider = try DatabaseQueue(path: directory.databasePath)
        let started = DispatchSemaphore(value: 0)
        let holder = Thread {
            try? outsider.writeWithoutTransaction { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                started.signal()
                Thread.sleep(forTimeInterval: 0.2)
                try db.execute(sql: "COMMIT")
            }
        }
        holder.start()
        started.wait()
        let receipt = try await ledger.apply(TransactionRequest(amount: 5, kind: .credit, description: "waited"), toClient: 5)
        XCTAssertEqual(receipt.outcome, .applied(Balance(limit: 500_000, balance: 5)))
    }
}
