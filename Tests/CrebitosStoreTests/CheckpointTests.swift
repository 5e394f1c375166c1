import CrebitosLedger
import CrebitosStore
import Foundation
import GRDB
import Logging
import Synchronization
import XCTest

/// A log handler that keeps what was logged at warning or above (shared by its copies).
struct RecordedWarnings: LogHandler {
    private final class Store: Sendable {
        let messages = Mutex<[String]>([])
    }

    private let store = Store()
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .warning
    var messages: [String] { store.messages.withLock { $0 } }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        store.messages.withLock { $0.append("\(event.message) \(event.metadata ?? [:])") }
    }
}

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
        // The checkpointer logs a failed checkpoint and goes on: what it logged is its error.
        let warnings = RecordedWarnings()
        let logger = Logger(label: "test") { _ in warnings }
        let services = try ledger.backgroundServices(logger: logger).filter { $0 is WALCheckpointer }
        XCTAssertEqual(services.count, 1)
        let sizeBefore = try fileSize(directory.databasePath)
        let checkpointer = Task { try await services[0].run() }
        try await writeSomeTransactions(ledger)
        try await Task.sleep(for: .milliseconds(300))
        checkpointer.cancel()
        try await checkpointer.value  // a cancelled checkpointer ends without an error
        XCTAssertEqual(warnings.messages, [], "the checkpointer logged a failure")
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
