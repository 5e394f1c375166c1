import CrebitosLedger
import CrebitosStore
import GRDB
import Synchronization
import XCTest

/// Two ledgers opened on one file behave like two processes: each has its own
/// connections, its own group-commit writer and its own descriptor of the lock file
/// (flock locks belong to the open file description, so they exclude each other even
/// in one process). Tests/CrebitosProcessTests does the same with real processes.
final class SharedFileTests: XCTestCase {
    func testManyInstancesOpeningAFreshFileAtOnceCreateExactlyOneSchema() throws {
        // Without the start-up lock, two migrators racing on a fresh file fail with
        // "table clientes already exists" or SQLITE_BUSY, or insert the clients twice.
        for _ in 0..<5 {
            let directory = try TemporaryDirectory()
            let path = directory.databasePath
            let results = Mutex<[Result<SQLiteLedger, any Error>]>([])
            DispatchQueue.concurrentPerform(iterations: 8) { _ in
                let result = Result { try SQLiteLedger.open(StoreConfiguration(path: path)) }
                results.withLock { $0.append(result) }
            }
            let ledgers = try results.withLock { try $0.map { try $0.get() } }
            XCTAssertEqual(ledgers.count, 8)
            let clients = try ledgers[0].audit()
            XCTAssertEqual(clients.map(\.clientID), [1, 2, 3, 4, 5])
            for ledger in ledgers { try ledger.close() }
        }
    }

    func testWritersOnTwoInstancesNeverLoseAnUpdate() async throws {
        // Timeline of what the lock prevents (without it, both read saldo 0):
        //
        //   A: read saldo=0 ───────────── write saldo=-1 ── commit
        //   B:        read saldo=0 ─────────────── write saldo=-1 ── commit   (lost update)
        //
        // With BEGIN IMMEDIATE inside the flock, B's transaction starts only after A
        // committed, and its UPDATE ... RETURNING reads A's result.
        let directory = try TemporaryDirectory()
        let first = try SQLiteLedger.open(StoreConfiguration(path: directory.databasePath))
        let second = try SQLiteLedger.open(StoreConfiguration(path: directory.databasePath, durability: .normal))
        defer {
            try? first.close()
            try? second.close()
        }
        let perInstance = 300
        let balances = try await withThrowingTaskGroup(of: Int64?.self) { group in
            for index in 0..<(2 * perInstance) {
                let ledger = index.isMultiple(of: 2) ? first : second
                group.addTask {
                    let kind: TransactionKind = index % 3 == 0 ? .credit : .debit
                    let receipt = try await ledger.apply(
                        TransactionRequest(amount: 400, kind: kind, description: "i\(index)"), toClient: 1)
                    if case .applied(let balance) = receipt.outcome { return balance.balance }
                    return nil
                }
            }
            var balances: [Int64] = []
            for try await balance in group { if let balance { balances.append(balance) } }
            return balances
        }
        let audit = try first.audit()[0]
        XCTAssertEqual(audit.transactionCount, balances.count)
        XCTAssertTrue(audit.isConsistent, "\(audit)")
        XCTAssertTrue(balances.allSatisfy { $0 >= -100_000 })
        // Each acknowledged write left a distinct balance behind it... except that a
        // credit and a debit may return to an earlier value; the sum check above is the
        // real invariant. The second instance sees the first's writes at once:
        let statement = try await second.statement(forClient: 1)
        XCTAssertEqual(statement?.balance.balance, audit.balance)
    }

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
