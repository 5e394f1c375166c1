import CrebitosLedger
@testable import CrebitosStore
import GRDB
import XCTest

/// What a write answers when it cannot be carried out, with SQLite-specific ways of
/// making it fail: the test holds the lock file (a frozen instance), holds SQLite's write
/// lock (the sqlite3 CLI), or adds a trigger that makes one request's INSERT fail.
final class WritePathFaultTests: XCTestCase {
    private var directory: TemporaryDirectory!

    override func setUp() async throws {
        directory = try TemporaryDirectory()
    }

    /// XCTest keeps every test case object until the process ends: drop the directory
    /// (and its files) now rather than leave it behind.
    override func tearDown() async throws {
        directory = nil
    }

    private func open(_ adjust: (inout StoreConfiguration) -> Void = { _ in }) throws -> SQLiteLedger {
        var configuration = StoreConfiguration(path: directory.databasePath)
        adjust(&configuration)
        return try SQLiteLedger.open(configuration)
    }

    private func credit(_ description: String, amount: Int64 = 10) throws -> TransactionRequest {
        try TransactionRequest(amount: amount, kind: .credit, description: description)
    }

    private func storedDescriptions(_ ledger: SQLiteLedger) throws -> Set<String> {
        try Set(ledger.database.read { try String.fetchAll($0, sql: "SELECT descricao FROM transacoes") })
    }

    private func assertConsistent(_ ledger: SQLiteLedger, file: StaticString = #filePath, line: UInt = #line) throws {
        for client in try ledger.audit() { XCTAssertTrue(client.isConsistent, "\(client)", file: file, line: line) }
    }

    /// Submits each request as its own task, waiting until the writer queued it, so the
    /// queue order is the list's order.
    private func submitQueued(
        _ ledger: SQLiteLedger, _ requests: [(TransactionRequest, Int64, IdempotencyKey?)]
    ) async throws -> [Task<TransactionReceipt, any Error>] {
        var tasks: [Task<TransactionReceipt, any Error>] = []
        let alreadyQueued = ledger.writer.queuedCount
        for (index, (request, client, key)) in requests.enumerated() {
            tasks.append(Task { try await ledger.apply(request, toClient: client, idempotencyKey: key) })
            try await waitUntil { ledger.writer.queuedCount == alreadyQueued + index + 1 }
        }
        return tasks
    }

    private func refusal(_ task: Task<TransactionReceipt, any Error>) async -> LedgerUnavailable? {
        do {
            let receipt = try await task.value
            XCTFail("expected a refusal, got \(receipt)")
            return nil
        } catch let error as LedgerUnavailable {
            return error
        } catch {
            XCTFail("expected LedgerUnavailable, got \(error)")
            return nil
        }
    }

    // MARK: Deadlines

    func testWritesWaitingPastTheirDeadlineForTheLockAreRefusedAndNeverWritten() async throws {
        let ledger = try open { $0.writeDeadline = .milliseconds(200) }
        defer { try? ledger.close() }
        let frozenInstance = try LockFileHolder(lockPath: ledger.configuration.lockPath)
        let waiting = try await submitQueued(ledger, (0..<5).map { (try credit("late\($0)"), 1, nil) })
        for task in waiting {
            let error = await refusal(task)
            XCTAssertEqual(error, .notWritten(.deadlineExceeded))
        }
        frozenInstance.release()
        let after = try await ledger.apply(credit("after"), toClient: 1)
        XCTAssertEqual(after.outcome, .applied(Balance(limit: 100_000, balance: 10)))
        XCTAssertEqual(try storedDescriptions(ledger), ["after"], "none of the refused writes was stored later")
    }

    func testTheDeadlineIsCheckedAfterTheLocksAreTakenBeforeWriting() async throws {
        // Our flock is free, but something outside it (the sqlite3 CLI) holds SQLite's
        // write lock for longer than the deadline: BEGIN IMMEDIATE waits in the busy
        // handler and succeeds after the deadline passed. The write must not happen.
        let ledger = try open { $0.writeDeadline = .milliseconds(100) }
        defer { try? ledger.close() }
        let outsider = try OutsideWriteLock(path: directory.databasePath, holdAtMost: 0.4)
        let request = try credit("late")
        let late = Task { try await ledger.apply(request, toClient: 2) }
        let error = await refusal(late)
        XCTAssertEqual(error, .notWritten(.deadlineExceeded))
        XCTAssertEqual(try storedDescriptions(ledger), [])
        try outsider.release()
    }

    func testBeyondTheQueueBoundWritesAreRefusedAtOnce() async throws {
        let ledger = try open { $0.maximumQueuedWrites = 3 }
        defer { try? ledger.close() }
        let frozenInstance = try LockFileHolder(lockPath: ledger.configuration.lockPath)
        let queued = try await submitQueued(ledger, (0..<3).map { (try credit("q\($0)"), 3, nil) })
        // Answered while the lock is still held: the refusal did not wait.
        for index in 3..<5 {
            do {
                _ = try await ledger.apply(credit("q\(index)"), toClient: 3)
                XCTFail("accepted past the bound")
            } catch let error as LedgerUnavailable {
                XCTAssertEqual(error, .notWritten(.queueFull))
            }
        }
        frozenInstance.release()
        for task in queued {
            let receipt = try await task.value
            guard case .applied = receipt.outcome else { return XCTFail("\(receipt)") }
        }
        XCTAssertEqual(try storedDescriptions(ledger), ["q0", "q1", "q2"])
    }

    func testClosingCommitsTheQueuedWritesAndRefusesNewOnes() async throws {
        let ledger = try open()
        let frozenInstance = try LockFileHolder(lockPath: ledger.configuration.lockPath)
        let queued = try await submitQueued(ledger, (0..<2).map { (try credit("s\($0)"), 4, nil) })
        let closing = Thread { try? ledger.close() }
        closing.start()
        try await waitUntil { ledger.writer.isClosing }
        do {
            _ = try await ledger.apply(credit("new"), toClient: 4)
            XCTFail("accepted while closing")
        } catch let error as LedgerUnavailable {
            XCTAssertEqual(error, .notWritten(.shuttingDown))
        }
        frozenInstance.release()
        for task in queued {
            let receipt = try await task.value
            guard case .applied = receipt.outcome else { return XCTFail("\(receipt)") }
        }
        let reopened = try SQLiteLedger.open(StoreConfiguration(path: directory.databasePath))
        defer { try? reopened.close() }
        XCTAssertEqual(try storedDescriptions(reopened), ["s0", "s1"])
    }

    // MARK: One bad request in a batch

    func testAFailingRequestIsRolledBackAloneAndItsNeighboursCommit() async throws {
        let ledger = try open()
        defer { try? ledger.close() }
        try await ledger.database.write { db in
            try db.execute(sql: """
                CREATE TRIGGER boom BEFORE INSERT ON transacoes WHEN NEW.descricao = 'boom'
                BEGIN SELECT RAISE(ABORT, 'boom'); END
                """)
        }
        // Held while the requests queue, so that all of them form one batch.
        let frozenInstance = try LockFileHolder(lockPath: ledger.configuration.lockPath)
        let key = try XCTUnwrap(IdempotencyKey("boom-key"))
        let tasks = try await submitQueued(ledger, [
            (try credit("before", amount: 100), 1, nil),
            (try credit("boom", amount: 7), 1, key),
            (try credit("after", amount: 5), 1, nil),
            (try TransactionRequest(amount: 3, kind: .debit, description: "other"), 2, nil),
        ])
        frozenInstance.release()
        let before = try await tasks[0].value
        XCTAssertEqual(before.outcome, .applied(Balance(limit: 100_000, balance: 100)))
        let error = await refusal(tasks[1])
        XCTAssertEqual(error, .notWritten(.transactionFailed))
        let after = try await tasks[2].value
        XCTAssertEqual(after.outcome, .applied(Balance(limit: 100_000, balance: 105)), "the failed request's UPDATE was undone")
        let other = try await tasks[3].value
        XCTAssertEqual(other.outcome, .applied(Balance(limit: 80_000, balance: -3)))
        XCTAssertEqual(try storedDescriptions(ledger), ["before", "after", "other"])
        let records = try await ledger.database.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM idempotency_keys") }
        XCTAssertEqual(records, 0, "the failed request's key was not recorded")
        try assertConsistent(ledger)
    }

    func testWhenTheCommitFailsTheOutcomeIsUnknown() async throws {
        // A deferred foreign key is checked at COMMIT: a trigger that inserts a dangling
        // reference makes the COMMIT itself fail, with real SQLite.
        let ledger = try open()
        defer { try? ledger.close() }
        try await ledger.database.write { db in
            try db.execute(sql: """
                CREATE TABLE commit_breaker (client INTEGER REFERENCES clientes(id) DEFERRABLE INITIALLY DEFERRED);
                CREATE TRIGGER break_commit AFTER INSERT ON transacoes WHEN NEW.descricao = 'breaker'
                BEGIN INSERT INTO commit_breaker VALUES (999); END;
                """)
        }
        let frozenInstance = try LockFileHolder(lockPath: ledger.configuration.lockPath)
        let tasks = try await submitQueued(ledger, [(try credit("fine"), 1, nil), (try credit("breaker"), 2, nil)])
        frozenInstance.release()
        for task in tasks {
            let error = await refusal(task)
            XCTAssertEqual(error, .outcomeUnknown)
        }
        XCTAssertEqual(try storedDescriptions(ledger), [])
        let next = try await ledger.apply(credit("next"), toClient: 1)
        XCTAssertEqual(next.outcome, .applied(Balance(limit: 100_000, balance: 10)), "the writer recovered")
    }

    func testWhenBeginFailsNothingIsWritten() async throws {
        // SQLite's write lock held from outside our flock for longer than the busy timeout.
        let ledger = try open { $0.busyTimeoutMilliseconds = 50 }
        defer { try? ledger.close() }
        let outsider = try OutsideWriteLock(path: directory.databasePath)
        let request = try credit("nobegin")
        let write = Task { try await ledger.apply(request, toClient: 5) }
        let error = await refusal(write)
        XCTAssertEqual(error, .notWritten(.transactionFailed))
        try outsider.release()
        XCTAssertEqual(try storedDescriptions(ledger), [])
    }

    /// The sqlite3 CLI in a `BEGIN IMMEDIATE` (the README sends operators there) holds SQLite's
    /// lock outside our flock. The writer waits for it only until its writes' deadline, then
    /// refuses them as late (not after the 10 s busy timeout, as a failed BEGIN), and a
    /// statement is still answered meanwhile.
    func testAnOutsideWriteLockIsWaitedForOnlyUntilTheDeadlineAndStatementsStillAnswer() async throws {
        let ledger = try open { $0.writeDeadline = .milliseconds(300) }
        defer { try? ledger.close() }
        // Held until the test is done, or 4 s at most: a writer that waits for the lock past
        // its deadline would then get it, and be refused only after.
        let outsider = try OutsideWriteLock(path: directory.databasePath, holdAtMost: 4, end: "ROLLBACK")
        let request = try credit("cliheld")
        let write = Task { try await ledger.apply(request, toClient: 5) }
        let statement = try await ledger.statement(forClient: 5)
        XCTAssertNotNil(statement, "a statement reads its snapshot while the CLI holds the write lock")
        let error = await refusal(write)
        XCTAssertEqual(error, .notWritten(.deadlineExceeded))
        XCTAssertFalse(outsider.hasEnded, "refused at its deadline, while the lock was still held, not once it was free")
        try outsider.release()
        XCTAssertEqual(try storedDescriptions(ledger), [])
    }

    // MARK: Idempotency keys in flight

    func testASecondRequestWithAKeyInFlightWaitsForTheFirstAndReplaysItsAnswer() async throws {
        let ledger = try open()
        defer { try? ledger.close() }
        let key = try XCTUnwrap(IdempotencyKey("1"))
        let frozenInstance = try LockFileHolder(lockPath: ledger.configuration.lockPath)
        // The same client and key twice while the first waits for the lock, and another
        // client's key "1" (another key): all three queue behind the lock.
        let queued = try await submitQueued(ledger, [
            (try credit("first"), 1, key), (try credit("first"), 1, key), (try credit("first"), 2, key),
        ])
        frozenInstance.release()
        let first = try await queued[0].value
        let second = try await queued[1].value
        let otherClient = try await queued[2].value
        XCTAssertEqual(first, TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: 10))))
        // The same answer as the first, replayed, as the other instance would give it.
        XCTAssertEqual(second, TransactionReceipt(outcome: first.outcome, isReplay: true))
        XCTAssertEqual(otherClient.outcome, .applied(Balance(limit: 80_000, balance: 10)))
        XCTAssertEqual(try ledger.audit().map(\.transactionCount), [1, 1, 0, 0, 0])
    }

    func testARequestWhoseKeyWasNotWrittenIsAppliedWhenSentAgain() async throws {
        let ledger = try open { $0.writeDeadline = .milliseconds(300) }
        defer { try? ledger.close() }
        let key = try XCTUnwrap(IdempotencyKey("late"))
        let frozenInstance = try LockFileHolder(lockPath: ledger.configuration.lockPath)
        let first = try await submitQueued(ledger, [(try credit("late"), 1, key)])[0]
        let refused = await refusal(first)
        XCTAssertEqual(refused, .notWritten(.deadlineExceeded))
        frozenInstance.release()
        let retry = try await ledger.apply(credit("late"), toClient: 1, idempotencyKey: key)
        XCTAssertEqual(retry, TransactionReceipt(outcome: .applied(Balance(limit: 100_000, balance: 10))))
    }
}

extension WritePathFaultTests {
    // MARK: A transaction left open

    /// A ROLLBACK that fails (an I/O error while SQLite undoes the batch) leaves the writer's
    /// connection inside a transaction. Making a ROLLBACK fail takes a faulty disk; this test
    /// makes the state it leaves instead: a transaction opened on the writer's connection
    /// and never ended, with a row in it. The process must not stop (GRDB's default is a
    /// fatalError when a database access ends inside a transaction), the row must never be
    /// committed, and the next write must be applied as usual.
    func testATransactionLeftOpenOnTheWriterIsRolledBackAndTheNextWriteApplies() async throws {
        let ledger = try open()
        defer { try? ledger.close() }
        try await ledger.database.writeWithoutTransaction { db in
            try db.execute(sql: "BEGIN IMMEDIATE")
            try db.execute(sql: """
                INSERT INTO transacoes (cliente_id, valor, tipo, descricao, realizada_em)
                VALUES (1, 5, 'c', 'orphan', 0)
                """)
        }
        let receipt = try await ledger.apply(credit("after"), toClient: 1)
        XCTAssertEqual(receipt.outcome, .applied(Balance(limit: 100_000, balance: 10)))
        XCTAssertEqual(try storedDescriptions(ledger), ["after"])
        try assertConsistent(ledger)
    }
}
