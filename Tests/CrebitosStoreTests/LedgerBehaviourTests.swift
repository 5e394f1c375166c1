import CrebitosLedger
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// The ledger's behaviour, the same on every engine: each test runs once on SQLite (a file
/// in a temporary directory) and once on PostgreSQL (a database of its own on the test
/// server), through the ``Ledger`` protocol. Engine-specific upkeep (SQLite's WAL, lock
/// file and migrations) is tested in the XCTest cases beside this file.
///
/// Serialized: the concurrency tests below put hundreds of writes in flight, and running
/// them beside each other on two cores would only test the write deadline.
@Suite(.serialized)
struct LedgerBehaviourTests {
    private func transaction(_ amount: Int64, _ kind: TransactionKind, _ description: String = "test") throws -> TransactionRequest {
        try TransactionRequest(amount: amount, kind: kind, description: description)
    }

    private func expectConsistent(_ ledger: TestLedger, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        for client in try await ledger.audit() {
            #expect(client.isConsistent, "\(client)", sourceLocation: sourceLocation)
        }
    }

    private func key(_ text: String) throws -> IdempotencyKey {
        try #require(IdempotencyKey(text))
    }

    // MARK: Clients and limits

    @Test(arguments: Engine.allCases)
    func aNewDatabaseHasTheFiveClientsOfTheSpec(engine: Engine) async throws {
        try await withLedger(engine) { ledger in
            let clients = try await ledger.audit()
            #expect(clients.map(\.clientID) == [1, 2, 3, 4, 5])
            #expect(clients.map(\.limit) == [100_000, 80_000, 1_000_000, 10_000_000, 500_000])
            #expect(clients.map(\.balance) == [0, 0, 0, 0, 0])
        }
    }

    @Test(arguments: Engine.allCases)
    func reopeningChangesNothing(engine: Engine) async throws {
        let first = try await TestLedger.fresh(engine)
        _ = try await first.apply(transaction(500, .credit), toClient: 2)
        try await first.close()
        let reopened = try await TestLedger.open(on: first.place)
        let clients = try await reopened.audit()
        try await reopened.close()
        #expect(clients.count == 5)
        #expect(clients[1].balance == 500)
        #expect(clients[1].transactionCount == 1)
    }

    @Test(arguments: Engine.allCases)
    func manyInstancesOpeningAnEmptyDatabaseAtOnceCreateExactlyOneSchema(engine: Engine) async throws {
        // Without the start-up lock, concurrent creators fail ("already exists") or seed
        // the clients twice.
        let place = try await TestLedger.newPlace(engine)
        let ledgers = try await withThrowingTaskGroup(of: TestLedger.self) { group in
            for _ in 0..<6 { group.addTask { try await TestLedger.open(on: place) } }
            var ledgers: [TestLedger] = []
            for try await ledger in group { ledgers.append(ledger) }
            return ledgers
        }
        let clients = try await ledgers[0].audit()
        for ledger in ledgers { try await ledger.close() }
        #expect(ledgers.count == 6)
        #expect(clients.map(\.clientID) == [1, 2, 3, 4, 5])
        #expect(clients.map(\.balance) == [0, 0, 0, 0, 0])
    }

    @Test(arguments: Engine.allCases)
    func creditAndDebitReturnTheNewBalance(engine: Engine) async throws {
        try await withLedger(engine) { ledger in
            let credit = try await ledger.apply(transaction(1000, .credit), toClient: 1)
            #expect(credit == TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: 1000))))
            let debit = try await ledger.apply(transaction(9098 + 1000, .debit), toClient: 1)
            #expect(debit.outcome == .applied(Balance(limit: 100_000, balance: -9098)))
            try await expectConsistent(ledger)
        }
    }

    /// A request that waited before the instance read it (nginx's X-Request-Start says so)
    /// longer than the write deadline is refused as late and never written, on every engine;
    /// one that waited less is written as usual.
    @Test(arguments: Engine.allCases)
    func aWriteThatAlreadyWaitedPastItsDeadlineIsRefusedAndNotStored(engine: Engine) async throws {
        try await withLedger(engine, options: LedgerOptions(writeDeadline: .seconds(2))) { ledger in
            let request = try transaction(7, .credit, "edge")
            let late: Result<TransactionReceipt, any Error> = await withCheckedContinuation { continuation in
                ledger.ledger.apply(request, toClient: 3, idempotencyKey: nil, alreadyWaited: .seconds(3)) { continuation.resume(returning: $0) }
            }
            #expect(throws: LedgerUnavailable.notWritten(.deadlineExceeded)) { try late.get() }
            let fresh: Result<TransactionReceipt, any Error> = await withCheckedContinuation { continuation in
                ledger.ledger.apply(request, toClient: 3, idempotencyKey: nil, alreadyWaited: .milliseconds(500)) { continuation.resume(returning: $0) }
            }
            #expect(try fresh.get().outcome == .applied(Balance(limit: 1_000_000, balance: 7)))
            #expect(try await ledger.audit()[2].transactionCount == 1, "only the fresh one is stored")
        }
    }

    @Test(arguments: Engine.allCases)
    func aDebitExactlyToTheLimitIsAccepted(engine: Engine) async throws {
        try await withLedger(engine) { ledger in
            let receipt = try await ledger.apply(transaction(80_000, .debit), toClient: 2)
            #expect(receipt.outcome == .applied(Balance(limit: 80_000, balance: -80_000)))
        }
    }

    @Test(arguments: Engine.allCases)
    func aDebitOneCentPastTheLimitIsRefusedAndWritesNothing(engine: Engine) async throws {
        try await withLedger(engine) { ledger in
            _ = try await ledger.apply(transaction(79_999, .debit), toClient: 2)
            let refused = try await ledger.apply(transaction(2, .debit), toClient: 2)
            #expect(refused.outcome == .insufficientLimit(Balance(limit: 80_000, balance: -79_999)))
            let audit = try await ledger.audit()[1]
            #expect(audit.balance == -79_999)
            #expect(audit.transactionCount == 1, "the refused debit is not stored")
            let stillPossible = try await ledger.apply(transaction(1, .debit), toClient: 2)
            #expect(stillPossible.outcome == .applied(Balance(limit: 80_000, balance: -80_000)))
        }
    }

    @Test(arguments: Engine.allCases)
    func aCreditPastTheBalanceCeilingIsRefused(engine: Engine) async throws {
        try await withLedger(engine) { ledger in
            _ = try await ledger.apply(transaction(TransactionRequest.maximumAmount, .credit), toClient: 3)
            let refused = try await ledger.apply(transaction(1, .credit), toClient: 3)
            #expect(refused.outcome == .balanceCeilingReached(Balance(limit: 1_000_000, balance: TransactionRequest.maximumAmount)))
            try await expectConsistent(ledger)
        }
    }

    @Test(arguments: Engine.allCases)
    func unknownClients(engine: Engine) async throws {
        try await withLedger(engine) { ledger in
            for id: Int64 in [0, 6, -1, .max] {
                let receipt = try await ledger.apply(transaction(1, .credit), toClient: id)
                #expect(receipt.outcome == .unknownClient)
                #expect(try await ledger.statement(forClient: id) == nil)
            }
            #expect(try await ledger.audit().map(\.transactionCount).reduce(0, +) == 0)
        }
    }

    // MARK: Statements

    @Test(arguments: Engine.allCases)
    func aStatementListsTheTenNewestNewestFirst(engine: Engine) async throws {
        try await withLedger(engine) { ledger in
            for index in 1...12 {
                _ = try await ledger.apply(transaction(Int64(index), index.isMultiple(of: 2) ? .credit : .debit, "t\(index)"), toClient: 4)
            }
            let statement = try #require(try await ledger.statement(forClient: 4))
            #expect(statement.entries.count == 10)
            #expect(statement.entries.map(\.description) == (3...12).reversed().map { "t\($0)" })
            #expect(statement.entries.first?.kind == .credit)
            #expect(statement.entries.first?.amount == 12)
            // 6 credits of 2+4+...+12 = 42, 6 debits of 1+3+...+11 = 36.
            #expect(statement.balance == Balance(limit: 10_000_000, balance: 6))
            #expect(zip(statement.entries, statement.entries.dropFirst()).allSatisfy { $0.performedAt >= $1.performedAt })
            #expect(statement.takenAt >= statement.entries[0].performedAt)
        }
    }

    @Test(arguments: Engine.allCases)
    func theStatementOfAClientWithoutTransactions(engine: Engine) async throws {
        try await withLedger(engine) { ledger in
            let statement = try #require(try await ledger.statement(forClient: 5))
            #expect(statement.balance == Balance(limit: 500_000, balance: 0))
            #expect(statement.entries == [])
        }
    }

    @Test(arguments: Engine.allCases)
    func statementsAreSnapshots(engine: Engine) async throws {
        // Writes and statements of one client run at once, and EVERY statement is
        // checked: its balance must be the balance the write of its newest entry
        // returned, and each older entry must be the write whose returned balance,
        // plus the next entry's amount, gives the next one's. A statement whose balance
        // and entries came from two different commits (two snapshots) breaks it.
        try await withLedger(engine) { ledger in
            let writes = 400
            // One commit before the race, so that every statement has an entry to check: a
            // writer thread may commit its first batch only after the first reads ran.
            let first = try await ledger.apply(TransactionRequest(amount: 1, kind: .credit, description: "first"), toClient: 1)
            guard case .applied(let firstBalance) = first.outcome else { throw CancellationError() }
            enum Event: Sendable {
                case wrote(description: String, balance: Int64)
                case read(AccountStatement)
            }
            let events = try await withThrowingTaskGroup(of: Event.self) { group in
                for index in 0..<(2 * writes) {
                    group.addTask {
                        guard index.isMultiple(of: 2) else {
                            // Spread over about 40 ms, so that reads meet commits in flight.
                            try await Task.sleep(for: .microseconds(index * 50))
                            return .read(try #require(try await ledger.statement(forClient: 1)))
                        }
                        // Never refused: the debits add up to far less than client 1's limit.
                        let description = "w\(index)"
                        let receipt = try await ledger.apply(
                            TransactionRequest(amount: Int64(index % 7 + 1), kind: index % 3 == 0 ? .debit : .credit, description: description),
                            toClient: 1)
                        guard case .applied(let balance) = receipt.outcome else {
                            Issue.record("unexpected \(receipt)")
                            return .wrote(description: description, balance: .min)
                        }
                        return .wrote(description: description, balance: balance.balance)
                    }
                }
                var events: [Event] = []
                for try await event in group { events.append(event) }
                return events
            }
            var balanceAfter: [String: Int64] = ["first": firstBalance.balance]
            var statements: [AccountStatement] = []
            for event in events {
                switch event {
                case .wrote(let description, let balance): balanceAfter[description] = balance
                case .read(let statement): statements.append(statement)
                }
            }
            #expect(balanceAfter.count == writes + 1)
            #expect(statements.count == writes)
            var checked = 0
            for statement in statements {
                guard let newest = statement.entries.first else {
                    #expect(statement.balance.balance == 0, "no entries, so nothing was committed yet")
                    continue
                }
                #expect(statement.balance.balance == balanceAfter[newest.description], "statement balance disagrees with its newest entry")
                for (newer, older) in zip(statement.entries, statement.entries.dropFirst()) {
                    let delta = newer.kind == .credit ? newer.amount : -newer.amount
                    #expect(try #require(balanceAfter[older.description]) + delta == balanceAfter[newer.description],
                            "consecutive entries are consecutive commits")
                }
                checked += 1
            }
            #expect(checked == writes)
            try await expectConsistent(ledger)
        }
    }

    // MARK: Concurrency

    @Test(arguments: Engine.allCases)
    func hundredsOfConcurrentDebitsStopExactlyAtTheLimit(engine: Engine) async throws {
        // Client 2 has limite 80000: 500 concurrent debits of 250 can take it to exactly
        // -80000 (320 of them succeed) and never below.
        try await withLedger(engine) { ledger in
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
            #expect(applied.count == 320)
            #expect(Set(applied).count == 320, "every accepted debit saw a distinct balance")
            #expect(applied.allSatisfy { $0 >= -80_000 })
            #expect(outcomes.count - applied.count == 180)
            let audit = try await ledger.audit()[1]
            #expect(audit.balance == -80_000)
            #expect(audit.transactionCount == 320)
            try await expectConsistent(ledger)
        }
    }

    @Test(arguments: Engine.allCases)
    func writersOnTwoInstancesNeverLoseAnUpdate(engine: Engine) async throws {
        // Two ledgers on one database behave like two processes: their writes interleave,
        // and none may be lost or take a balance past its limit.
        let first = try await TestLedger.fresh(engine)
        let second = try await TestLedger.open(on: first.place)
        let perInstance = 300
        let balances = try await withThrowingTaskGroup(of: Int64?.self) { group in
            for index in 0..<(2 * perInstance) {
                let ledger = index.isMultiple(of: 2) ? first : second
                group.addTask {
                    let kind: TransactionKind = index % 3 == 0 ? .credit : .debit
                    let receipt = try await ledger.apply(TransactionRequest(amount: 400, kind: kind, description: "i\(index)"), toClient: 1)
                    if case .applied(let balance) = receipt.outcome { return balance.balance }
                    return nil
                }
            }
            var balances: [Int64] = []
            for try await balance in group { if let balance { balances.append(balance) } }
            return balances
        }
        let audit = try await first.audit()[0]
        let seenBySecond = try await second.statement(forClient: 1)
        try await first.close()
        try await second.close()
        #expect(audit.transactionCount == balances.count)
        #expect(audit.isConsistent, "\(audit)")
        #expect(balances.allSatisfy { $0 >= -100_000 })
        #expect(seenBySecond?.balance.balance == audit.balance, "the second instance sees the first's writes at once")
    }

    // MARK: Idempotency keys

    @Test(arguments: Engine.allCases)
    func anIdempotencyKeyReplaysTheRecordedAnswerAndWritesNothing(engine: Engine) async throws {
        try await withLedger(engine) { ledger in
            let key = try key("key-1")
            let first = try await ledger.apply(transaction(700, .debit, "once"), toClient: 1, idempotencyKey: key)
            #expect(first == TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: -700))))
            _ = try await ledger.apply(transaction(100, .credit, "other"), toClient: 1)
            let retry = try await ledger.apply(transaction(700, .debit, "once"), toClient: 1, idempotencyKey: key)
            #expect(retry == TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: -700)), isReplay: true))
            let audit = try await ledger.audit()[0]
            #expect(audit.transactionCount == 2)
            #expect(audit.balance == -600)
        }
    }

    @Test(arguments: Engine.allCases)
    func anIdempotencyKeyWithADifferentRequestIsRefused(engine: Engine) async throws {
        try await withLedger(engine) { ledger in
            let key = try key("key-2")
            _ = try await ledger.apply(transaction(700, .debit, "once"), toClient: 1, idempotencyKey: key)
            for request in [try transaction(701, .debit, "once"), try transaction(700, .credit, "once"), try transaction(700, .debit, "twice")] {
                let receipt = try await ledger.apply(request, toClient: 1, idempotencyKey: key)
                #expect(receipt.outcome == .idempotencyKeyReused)
            }
            #expect(try await ledger.audit().map(\.transactionCount).reduce(0, +) == 1)
        }
    }

    @Test(arguments: Engine.allCases)
    func idempotencyKeysBelongToTheirClient(engine: Engine) async throws {
        // Clients 1 and 2 both use key "1": two keys, two transactions.
        try await withLedger(engine) { ledger in
            let key = try key("1")
            let first = try await ledger.apply(transaction(700, .debit, "once"), toClient: 1, idempotencyKey: key)
            #expect(first == TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: -700))))
            let second = try await ledger.apply(transaction(700, .debit, "once"), toClient: 2, idempotencyKey: key)
            #expect(second == TransactionReceipt(outcome: .applied(Balance(limit: 80_000, balance: -700))))
            let differentRequest = try await ledger.apply(transaction(5, .credit, "x"), toClient: 3, idempotencyKey: key)
            #expect(differentRequest.outcome == .applied(Balance(limit: 1_000_000, balance: 5)))
            let replay = try await ledger.apply(transaction(700, .debit, "once"), toClient: 2, idempotencyKey: key)
            #expect(replay == TransactionReceipt(outcome: second.outcome, isReplay: true))
            var counts: [Int] = []
            for client: Int64 in 1...4 { counts.append(try #require(try await ledger.statement(forClient: client)).entries.count) }
            #expect(counts == [1, 1, 1, 0])
        }
    }

    @Test(arguments: Engine.allCases)
    func aRequestForAnUnknownClientRecordsNoKey(engine: Engine) async throws {
        try await withLedger(engine) { ledger in
            for index in 0..<20 {
                let receipt = try await ledger.apply(transaction(1, .credit), toClient: 6 + Int64(index), idempotencyKey: try key("unknown-\(index)"))
                #expect(receipt.outcome == .unknownClient)
            }
            #expect(try await ledger.idempotencyRecordKeys() == [])
        }
    }

    @Test(arguments: Engine.allCases)
    func anIdempotencyKeyRemembersARefusedDebit(engine: Engine) async throws {
        try await withLedger(engine) { ledger in
            let key = try key("key-3")
            let refused = try await ledger.apply(transaction(200_000, .debit), toClient: 1, idempotencyKey: key)
            #expect(refused.outcome == .insufficientLimit(Balance(limit: 100_000, balance: 0)))
            _ = try await ledger.apply(transaction(500_000, .credit), toClient: 1)
            let retry = try await ledger.apply(transaction(200_000, .debit), toClient: 1, idempotencyKey: key)
            #expect(retry == TransactionReceipt(outcome: refused.outcome, isReplay: true), "a retry gets the first answer, even though it would succeed now")
        }
    }

    @Test(arguments: Engine.allCases)
    func concurrentRetriesWithOneKeyApplyOnce(engine: Engine) async throws {
        try await withLedger(engine) { ledger in
            let key = try key("key-4")
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
            // One applied it; each of the others waited for it and got its answer, replayed.
            let applied = TransactionOutcome.applied(Balance(limit: 1_000_000, balance: -10))
            #expect(receipts.filter { !$0.isReplay }.count == 1)
            #expect(receipts.allSatisfy { $0.outcome == applied })
            #expect(try await ledger.audit()[2].transactionCount == 1)
        }
    }

    @Test(arguments: Engine.allCases)
    func retriesWithOneKeyOnTwoInstancesApplyOnce(engine: Engine) async throws {
        // Across instances as within one: the store serialises the key, and every request
        // after the first finds its record and replays it.
        let first = try await TestLedger.fresh(engine)
        let second = try await TestLedger.open(on: first.place)
        let key = try key("two-instances")
        let receipts = try await withThrowingTaskGroup(of: TransactionReceipt.self) { group in
            for index in 0..<40 {
                let ledger = index.isMultiple(of: 2) ? first : second
                group.addTask { try await ledger.apply(TransactionRequest(amount: 10, kind: .debit, description: "retry"), toClient: 3, idempotencyKey: key) }
            }
            var receipts: [TransactionReceipt] = []
            for try await receipt in group { receipts.append(receipt) }
            return receipts
        }
        let transactions = try await first.audit()[2].transactionCount
        try await first.close()
        try await second.close()
        let applied = TransactionOutcome.applied(Balance(limit: 1_000_000, balance: -10))
        #expect(receipts.filter { !$0.isReplay }.count == 1)
        #expect(receipts.allSatisfy { $0.outcome == applied })
        #expect(transactions == 1)
    }

    // MARK: Expiry of idempotency records

    /// A wall clock the test sets, in microseconds.
    private final class ManualClock: Sendable {
        let now = Mutex<Int64>(1_700_000_000_000_000)
        var read: @Sendable () -> Int64 { { self.now.withLock { $0 } } }
        func advance(by microseconds: Int64) { now.withLock { $0 += microseconds } }
    }

    @Test(arguments: Engine.allCases)
    func expiredIdempotencyRecordsAreDeletedInBatchesAndFreshOnesKept(engine: Engine) async throws {
        let clock = ManualClock()
        try await withLedger(engine, options: LedgerOptions(idempotencyRetention: .seconds(3600), wallClock: clock.read)) { ledger in
            let oldKey = try key("old")
            _ = try await ledger.apply(transaction(10, .credit, "old"), toClient: 1, idempotencyKey: oldKey)
            // More expired rows than one cleanup batch holds.
            try await ledger.insertIdempotencyRecords(count: 1_200, createdAt: clock.read() - 1)
            clock.advance(by: 3_600_000_001)
            _ = try await ledger.apply(transaction(10, .credit, "new"), toClient: 1, idempotencyKey: try key("new"))
            #expect(try await ledger.deleteExpiredIdempotencyRecords() == 1_201)
            #expect(try await ledger.idempotencyRecordKeys() == ["new"])
            // After expiry the key is free again: the same request is a new transaction.
            let again = try await ledger.apply(transaction(10, .credit, "old"), toClient: 1, idempotencyKey: oldKey)
            #expect(again == TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: 30))))
        }
    }

    @Test(arguments: Engine.allCases)
    func theCleanupRunsAsABackgroundServiceAndStopsAtOnceOnGracefulShutdown(engine: Engine) async throws {
        let clock = ManualClock()
        let options = LedgerOptions(idempotencyRetention: .seconds(60), idempotencyCleanupInterval: .milliseconds(10), wallClock: clock.read)
        try await withLedger(engine, options: options) { ledger in
            _ = try await ledger.apply(transaction(10, .credit, "k"), toClient: 1, idempotencyKey: try key("k"))
            clock.advance(by: 61_000_000)
            let group = ServiceGroup(services: try ledger.backgroundServices(), logger: Logger(label: "test"))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                // A bound for a broken test (10 s), not a timing assertion.
                var remaining = try await ledger.idempotencyRecordKeys()
                for _ in 0..<1_000 where !remaining.isEmpty {
                    try await Task.sleep(for: .milliseconds(10))
                    remaining = try await ledger.idempotencyRecordKeys()
                }
                #expect(remaining == [])
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        }
    }

    // MARK: Timestamps

    @Test(arguments: Engine.allCases)
    func realizadaEmNeverGoesBackwardsWhenTheWallClockStepsBack(engine: Engine) async throws {
        let clock = ManualClock()
        try await withLedger(engine, options: LedgerOptions(wallClock: clock.read)) { ledger in
            _ = try await ledger.apply(transaction(10, .credit, "t1"), toClient: 1)
            clock.advance(by: -3_600_000_000)  // NTP steps the clock back an hour
            _ = try await ledger.apply(transaction(10, .credit, "t2"), toClient: 1)
            _ = try await ledger.apply(transaction(10, .credit, "t3"), toClient: 1)
            let statement = try #require(try await ledger.statement(forClient: 1))
            #expect(statement.entries.map(\.description) == ["t3", "t2", "t1"])
            let times = statement.entries.map(\.performedAt)
            #expect(zip(times, times.dropFirst()).allSatisfy { $0 > $1 }, "\(times)")
            #expect(statement.takenAt >= times[0])
        }
    }
}
