import CrebitosLedger
import CrebitosStore
import Foundation
import GRDB
import Logging
import XCTest

/// Committed pages sit in the WAL until a checkpoint copies them into the database file,
/// so the file's size tells whether a checkpoint ran.
final class CheckpointTests: XCTestCase {
    private func fileSize(_ path: String) throws -> Int {
        try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
    }

    private func writeSomeTransactions(_ ledger: SQLiteLedger) async throws {
        for index in 0..<300 {
            _ = try await ledger.apply(
                TransactionRequest(amount: 1, kind: .credit, description: "cp\(index)"), toClient: Int64(index % 5 + 1))
        }
    }

    func testTheBackgroundCheckpointerCopiesTheWALIntoTheFile() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try SQLiteLedger.open(
            StoreConfiguration(path: directory.databasePath, checkpoint: .background(interval: .milliseconds(20))))
        defer { try? ledger.close() }
        let writerBackstop = try await ledger.database.writeWithoutTransaction { try Int.fetchOne($0, sql: "PRAGMA wal_autocheckpoint") }
        XCTAssertEqual(writerBackstop, 10_000)
        let services = try ledger.backgroundServices(logger: Logger(label: "test")).filter { $0 is WALCheckpointer }
        XCTAssertEqual(services.count, 1)
        let sizeBefore = try fileSize(directory.databasePath)
        let checkpointer = Task { try await services[0].run() }
        try await writeSomeTransactions(ledger)
        try await Task.sleep(for: .milliseconds(300))
        checkpointer.cancel()
        _ = try? await checkpointer.value
        XCTAssertGreaterThan(try fileSize(directory.databasePath), sizeBefore, "the transactions reached the database file")
    }

    func testWithoutItSmallWALsStayInTheWAL() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try SQLiteLedger.open(StoreConfiguration(path: directory.databasePath))
        defer { try? ledger.close() }
        XCTAssertFalse(try ledger.backgroundServices(logger: Logger(label: "test")).contains { $0 is WALCheckpointer })
        let sizeBefore = try fileSize(directory.databasePath)
        try await writeSomeTransactions(ledger)
        try await Task.sleep(for: .milliseconds(300))
        XCTAssertEqual(try fileSize(directory.databasePath), sizeBefore, "below 1000 WAL pages SQLite does not checkpoint")
    }
}
