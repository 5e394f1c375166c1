import CrebitosLedger
@testable import CrebitosStore
import GRDB
import XCTest

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

    private func transaction(_ amount: Int64, _ kind: TransactionKind, _ description: String = "test") throws -> TransactionRequest {
        try TransactionRequest(amount: amount, kind: kind, description: description)
    }

    private func assertConsistent(file: StaticString = #filePath, line: UInt = #line) throws {
        for client in try ledger.audit() {
            XCTAssertTrue(client.isConsistent, "\(client)", file: file, line: line)
        }
    }

    func testANewDatabaseHasTheFiveClientsOfTheSpec() throws {
        let clients = try ledger.audit()
        XCTAssertEqual(clients.map(\.clientID), [1, 2, 3, 4, 5])
        XCTAssertEqual(clients.map(\.limit), [100_000, 80_000, 1_000_000, 10_000_000, 500_000])
        XCTAssertEqual(clients.map(\.balance), [0, 0, 0, 0, 0])
    }

    func testReopeningChangesNothing() async throws {
        _ = try await ledger.apply(transaction(500, .credit), toClient: 2)
        try ledger.close()
        ledger = try SQLiteLedger.open(StoreConfiguration(path: directory.databasePath))
        let clients = try ledger.audit()
        XCTAssertEqual(clients.count, 5)
        XCTAssertEqual(clients[1].balance, 500)
        XCTAssertEqual(clients[1].transactionCount, 1)
    }

    func testTheDatabaseIsInWALModeWithDurableCommitsByDefault() throws {
        let mode = try ledger.database.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
        XCTAssertEqual(mode, "wal")
        XCTAssertEqual(try ledger.writerSynchronousMode(), 2, "synchronous=FULL")
    }

    func testNormalDurabilityIsApplied() throws {
        let other = try TemporaryDirectory()
        let normal = try SQLiteLedger.open(StoreConfiguration(path: other.databasePath, durability: .normal))
        defer { try? normal.close() }
        XCTAssertEqual(try normal.writerSynchronousMode(), 1, "synchronous=NORMAL")
    }

    func testCreditAndDebitReturnTheNewBalance() async throws {
        let credit = try await ledger.apply(transaction(1000, .credit), toClient: 1)
        XCTAssertEqual(credit, TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: 1000))))
        let debit = try await ledger.apply(transaction(9098 + 1000, .debit), toClient: 1)
        XCTAssertEqual(debit.outcome, .applied(Balance(limit: 100_000, balance: -9098)))
        try assertConsistent()
    }

    func testADebitExactlyToTheLimitIsAccepted() async throws {
        let receipt = try await ledger.apply(transaction(80_000, .debit), toClient: 2)
        XCTAssertEqual(receipt.outcome, .applied(Balance(limit: 80_000, balance: -80_000)))
    }

    func testADebitOneCentPastTheLimitIsRefusedAndWritesNothing() async throws {
        _ = try await ledger.apply(transaction(79_999, .debit), toClient: 2)
        let refused = try await ledger.apply(transaction(2, .debit), toClient: 2)
        XCTAssertEqual(refused.outcome, .insufficientLimit(Balance(limit: 80_000, balance: -79_999)))
        let audit = try ledger.audit()[1]
        XCTAssertEqual(audit.balance, -79_999)
        XCTAssertEqual(audit.transactionCount, 1, "the refused debit is not stored")
        let stillPossible = try await ledger.apply(transaction(1, .debit), toClient: 2)
        XCTAssertEqual(stillPossible.outcome, .applied(Balance(limit: 80_000, balance: -80_000)))
    }

    func testACreditPastTheBalanceCeilingIsRefused() async throws {
        _ = try await ledger.apply(transaction(TransactionRequest.maximumAmount, .credit), toClient: 3)
        let refused = try await ledger.apply(transaction(1, .credit), toClient: 3)
        XCTAssertEqual(
            refused.outcome,
            .balanceCeilingReached(Balance(limit: 1_000_000, balance: TransactionRequest.maximumAmount)))
        try assertConsistent()
    }

    func testUnknownClients() async throws {
        for id: Int64 in [0, 6, -1, .max] {
            let receipt = try await ledger.apply(transaction(1, .credit), toClient: id)
            XCTAssertEqual(receipt.outcome, .unknownClient)
            let statement = try await ledger.statement(forClient: id)
            XCTAssertNil(statement)
        }
        XCTAssertEqual(try ledger.audit().map(\.transactionCount).reduce(0, +), 0)
    }

    func testStatementListsTheTenNewestNewestFirst() async throws {
        for index in 1...12 {
            _ = try await ledger.apply(transaction(Int64(index), index.isMultiple(of: 2) ? .credit : .debit, "t\(index)"), toClient: 4)
        }
        let statement = try await XCTUnwrapAsync(await ledger.statement(forClient: 4))
        XCTAssertEqual(statement.entries.count, 10)
        XCTAssertEqual(statement.entries.map(\.description), (3...12).reversed().map { "t\($0)" })
        XCTAssertEqual(statement.entries.first?.kind, .credit)
        XCTAssertEqual(statement.entries.first?.amount, 12)
        // 6 credits of 2+4+...+12 = 42, 6 debits of 1+3+...+11 = 36.
        XCTAssertEqual(statement.balance, Balance(limit: 10_000_000, balance: 6))
        XCTAssertTrue(zip(statement.entries, statement.entries.dropFirst()).allSatisfy { $0.performedAt >= $1.performedAt })
        XCTAssertGreaterThanOrEqual(statement.takenAt, statement.entries[0].performedAt)
    }

    func testStatementOfAClientWithoutTransactions() async throws {
        let statement = try await XCTUnwrapAsync(await ledger.statement(forClient: 5))
        XCTAssertEqual(statement.balance, Balance(limit: 500_000, balance: 0))
        XCTAssertEqual(statement.entries, [])
    }

    func testStatementsAreSnapshots() async throws {
        // Writes and statements of one client run at once, and EVERY statement is
        // checked: its balance must be the balance the write of its newest entry
        // returned, and each older entry must be the write whose returned balance,
        // plus the next entry's amount, gives the next one's. A statement whose balance
        // and entries came from two different commits (two read transactions) breaks it.
        let ledger = self.ledger!
        let writes = 400
        enum Event: Sendable {
            case wrote(description: String, balance: Int64)
            case read(AccountStatement)
        }
        let events = try await withThrowingTaskGroup(of: Event.self) { group in
            for index in 0..<(2 * writes) {
                group.addTask {
                    guard index.isMultiple(of: 2) else {
                        return .read(try await XCTUnwrapAsync(await ledger.statement(forClient: 1)))
                    }
                    // Never refused: the debits add up to far less than client 1's limit.
                    let description = "w\(index)"
                    let receipt = try await ledger.apply(
                        TransactionRequest(amount: Int64(index % 7 + 1), kind: index % 3 == 0 ? .debit : .credit, description: description),
                        toClient: 1)
                    guard case .applied(let balance) = receipt.outcome else { throw XCTSkip("unexpected \(receipt)") }
                    return .wrote(description: description, balance: balance.balance)
                }
            }
            var events: [Event] = []
            for try await event in group { events.append(event) }
            return events
        }
        var balanceAfter: [String: Int64] = [:]
        var statements: [AccountStatement] = []
        for event in events {
            switch event {
            case .wrote(let description, let balance): balanceAfter[description] = balance
            case .read(let statement): statements.append(statement)
            }
        }
        XCTAssertEqual(balanceAfter.count, writes)
        XCTAssertEqual(statements.count, writes)
        var checked = 0
        for statement in statements {
            guard let newest = statement.entries.first else {
                XCTAssertEqual(statement.balance.balance, 0, "no entries, so nothing was committed yet")
                continue
            }
            let newestBalance = try XCTUnwrap(balanceAfter[newest.description])
            XCTAssertEqual(statement.balance.balance, newestBalance, "statement balance disagrees with its newest entry")
            for (newer, older) in zip(statement.entries, statement.entries.dropFirst()) {
                let delta = newer.kind == .credit ? newer.amount : -newer.amount
                XCTAssertEqual(try XCTUnwrap(balanceAfter[older.description]) + delta, try XCTUnwrap(balanceAfter[newer.description]),
                               "consecutive entries are consecutive commits")
            }
            checked += 1
        }
        XCTAssertGreaterThan(checked, 0)
        try assertConsistent()
    }

    func testHundredsOfConcurrentDebitsStopExactlyAtTheLimit() async throws {
        // Client 2 has limite 80000: 500 concurrent debits of 250 can take it to exactly
        // -80000 (320 of them succeed) and never below.
        let ledger = self.ledger!
        let outcomes = try await withThrowingTaskGroup(of: TransactionOutcome.self) { group in
            for index in 0..<500 {
                group.addTask {
                    try await ledger.apply(TransactionRequest(amount: 250, kind: .debit, description: "d\(index)"), toClient: 2).outcome
                }
            }
            var outcomes: [TransactionOutcome] = []
            for try await outcome in group { outcomes.append(outcome) }
            return outcomes
        }
        let applied = outcomes.compactMap { outcome -> Int64? in
            if case .applied(let balance) = outcome { return balance.balance }
            return nil
        }
        XCTAssertEqual(applied.count, 320)
        XCTAssertEqual(Set(applied).count, 320, "every accepted debit saw a distinct balance")
        XCTAssertTrue(applied.allSatisfy { $0 >= -80_000 })
        XCTAssertEqual(outcomes.count - applied.count, 180)
        let audit = try ledger.audit()[1]
        XCTAssertEqual(audit.balance, -80_000)
        XCTAssertEqual(audit.transactionCount, 320)
        try assertConsistent()
    }

    func testIdempotencyKeyReplaysTheRecordedAnswerAndWritesNothing() async throws {
        let key = try XCTUnwrap(IdempotencyKey("key-1"))
        let first = try await ledger.apply(transaction(700, .debit, "once"), toClient: 1, idempotencyKey: key)
        XCTAssertEqual(first, TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: -700))))
        _ = try await ledger.apply(transaction(100, .credit, "other"), toClient: 1)
        let retry = try await ledger.apply(transaction(700, .debit, "once"), toClient: 1, idempotencyKey: key)
        XCTAssertEqual(retry, TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: -700)), isReplay: true))
        let audit = try ledger.audit()[0]
        XCTAssertEqual(audit.transactionCount, 2)
        XCTAssertEqual(audit.balance, -600)
    }

    func testIdempotencyKeyWithADifferentRequestIsRefused() async throws {
        let key = try XCTUnwrap(IdempotencyKey("key-2"))
        _ = try await ledger.apply(transaction(700, .debit, "once"), toClient: 1, idempotencyKey: key)
        for (request, client) in [(try transaction(701, .debit, "once"), Int64(1)), (try transaction(700, .credit, "once"), 1),
                                  (try transaction(700, .debit, "twice"), 1)] {
            let receipt = try await ledger.apply(request, toClient: client, idempotencyKey: key)
            XCTAssertEqual(receipt.outcome, .idempotencyKeyReused)
        }
        XCTAssertEqual(try ledger.audit().map(\.transactionCount).reduce(0, +), 1)
    }

    func testIdempotencyKeysBelongToTheirClient() async throws {
        // Clients 1 and 2 both use key "1": two keys, two transactions.
        let key = try XCTUnwrap(IdempotencyKey("1"))
        let first = try await ledger.apply(transaction(700, .debit, "once"), toClient: 1, idempotencyKey: key)
        XCTAssertEqual(first, TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: -700))))
        let second = try await ledger.apply(transaction(700, .debit, "once"), toClient: 2, idempotencyKey: key)
        XCTAssertEqual(second, TransactionReceipt(outcome: .applied(Balance(limit: 80_000, balance: -700))))
        let differentRequest = try await ledger.apply(transaction(5, .credit, "x"), toClient: 3, idempotencyKey: key)
        XCTAssertEqual(differentRequest.outcome, .applied(Balance(limit: 1_000_000, balance: 5)))
        let replay = try await ledger.apply(transaction(700, .debit, "once"), toClient: 2, idempotencyKey: key)
        XCTAssertEqual(replay, TransactionReceipt(outcome: second.outcome, isReplay: true))
        // Through the Ledger protocol only, so the test holds for any engine.
        var counts: [Int] = []
        for client: Int64 in 1...4 { counts.append(try await XCTUnwrapAsync(await ledger.statement(forClient: client)).entries.count) }
        XCTAssertEqual(counts, [1, 1, 1, 0])
    }

    func testARequestForAnUnknownClientRecordsNoKey() async throws {
        for index in 0..<20 {
            let key = try XCTUnwrap(IdempotencyKey("unknown-\(index)"))
            let receipt = try await ledger.apply(transaction(1, .credit), toClient: 6 + Int64(index), idempotencyKey: key)
            XCTAssertEqual(receipt.outcome, .unknownClient)
        }
        let records = try await ledger.database.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM idempotency_keys") }
        XCTAssertEqual(records, 0)
    }

    func testIdempotencyKeyRemembersARefusedDebit() async throws {
        let key = try XCTUnwrap(IdempotencyKey("key-3"))
        let refused = try await ledger.apply(transaction(200_000, .debit), toClient: 1, idempotencyKey: key)
        XCTAssertEqual(refused.outcome, .insufficientLimit(Balance(limit: 100_000, balance: 0)))
        _ = try await ledger.apply(transaction(500_000, .credit), toClient: 1)
        let retry = try await ledger.apply(transaction(200_000, .debit), toClient: 1, idempotencyKey: key)
        XCTAssertEqual(retry, TransactionReceipt(outcome: refused.outcome, isReplay: true),
                       "a retry gets the first answer, even though it would succeed now")
    }

    func testConcurrentRetriesWithOneKeyApplyOnce() async throws {
        let ledger = self.ledger!
        let key = try XCTUnwrap(IdempotencyKey("key-4"))
        let receipts = try await withThrowingTaskGroup(of: TransactionReceipt.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    try await ledger.apply(TransactionRequest(amount: 10, kind: .debit, description: "retry"), toClient: 3, idempotencyKey: key)
                }
            }
            var receipts: [TransactionReceipt] = []
            for try await receipt in group { receipts.append(receipt) }
            return receipts
        }
        // One applied it; the others were answered 409 while it was in flight, or replayed
        // its recorded answer after it committed.
        let applied = TransactionOutcome.applied(Balance(limit: 1_000_000, balance: -10))
        XCTAssertEqual(receipts.filter { !$0.isReplay && $0.outcome == applied }.count, 1)
        XCTAssertTrue(receipts.allSatisfy { $0.outcome == applied || $0.outcome == .idempotencyKeyInFlight })
        XCTAssertTrue(receipts.allSatisfy { $0.outcome == applied || !$0.isReplay })
        XCTAssertEqual(try ledger.audit()[2].transactionCount, 1)
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
