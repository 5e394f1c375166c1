import CrebitosLedger
@testable import CrebitosPostgres
import CrebitosTestSupport
import Foundation
import PostgresNIO
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A PostgreSQL server that stops answering (its postmaster and every backend stopped with
/// SIGSTOP: a VM paused, a disk hung, a swap storm) while an instance is under load. The
/// kernel still accepts and acknowledges on its sockets, so nothing fails: queries just
/// never return. The instance must keep answering, hold a bounded amount of work, and be
/// back to normal soon after the server resumes, with nothing lost or written twice.
struct PostgresStallTests {
    static let deadline = Duration.seconds(1)
    static let limit = 64

    @Test(.timeLimit(.minutes(2)))
    func aStalledServerNeitherGrowsNorWedgesTheInstance() async throws {
        let server = try TemporaryPostgres.Dedicated()
        defer { server.stop() }
        let url = try await server.freshDatabaseURL()
        var configuration = PostgresStoreConfiguration(url: try PostgresURL(url), writeDeadline: Self.deadline)
        configuration.maximumRequestsInFlight = Self.limit
        let ledger = try await PostgresLedger.open(configuration)
        let log = RequestLog()

        // About 200 writes and 20 statements a second, each a callback: the load does not
        // wait for answers, as an HTTP server's clients do not.
        let load = Task {
            var index = 0
            while !Task.isCancelled {
                let number = index
                index += 1
                let started = ContinuousClock.now
                log.sent(write: number)
                ledger.apply(try! TransactionRequest(amount: 1, kind: .credit, description: "w\(number)"), toClient: Int64(number % 5 + 1), idempotencyKey: nil) { result in
                    log.answered(number, write: result, after: started.duration(to: .now))
                }
                if number % 10 == 0 {
                    log.sent()
                    ledger.statement(forClient: Int64(number % 5 + 1)) { result in
                        log.answered(statement: result, after: started.duration(to: .now))
                    }
                }
                try? await Task.sleep(for: .milliseconds(5))
            }
        }

        try await Task.sleep(for: .seconds(1))
        let processes = try server.processIDs()
        for pid in processes { kill(pid, SIGSTOP) }
        var peak = 0
        for _ in 0..<40 {  // about 4 s stopped
            peak = max(peak, ledger.requestsInFlight)
            try await Task.sleep(for: .milliseconds(100))
        }
        for pid in processes { kill(pid, SIGCONT) }
        let resumed = log.nextWrite

        // Back to normal: writes sent after the server resumed are applied again.
        var recovered = false
        for _ in 0..<100 where !recovered {
            try await Task.sleep(for: .milliseconds(100))
            peak = max(peak, ledger.requestsInFlight)
            recovered = log.appliedAfter(resumed) >= 20
        }
        load.cancel()
        await load.value

        // Every request answered, and every piece of work ended.
        for _ in 0..<100 where log.unanswered > 0 || ledger.requestsInFlight > 0 || ledger.tasksRunning > 0 {
            try await Task.sleep(for: .milliseconds(100))
        }
        let summary = log.summary
        #expect(recovered, "no write was applied after the server resumed: \(summary)")
        #expect(log.unanswered == 0, "requests never answered: \(summary)")
        #expect(ledger.requestsInFlight == 0, "work left behind after the load ended")
        #expect(ledger.tasksRunning == 0, "tasks waiting forever on a query that will never return")
        #expect(peak <= Self.limit, "\(peak) requests in the instance's hands at once")
        #expect(summary.refusedQueueFull > 0, "the load should have reached the bound: \(summary)")
        #expect(summary.unavailableDuringStall > 0, "the stall should have been noticed: \(summary)")
        // Within twice the deadline (the store's promise), with a second of slack for a busy machine.
        #expect(summary.slowest <= Self.deadline * 2 + .seconds(1), "\(summary)")

        // Nothing lost, nothing doubled: each transaction is stored once if it was
        // answered applied, never if answered "not written", at most once if unknown.
        let stored = try await ledger.client.query("SELECT descricao, count(*) FROM transacoes GROUP BY descricao").collect()
        var copies: [String: Int64] = [:]
        for row in stored {
            let (description, count) = try row.decode((String, Int64).self)
            copies[description] = count
        }
        for (number, answer) in log.writes {
            let count = copies["w\(number)"] ?? 0
            switch answer {
            case .applied: #expect(count == 1, "w\(number) answered applied, stored \(count) times")
            case .notWritten: #expect(count == 0, "w\(number) answered not written, stored \(count) times")
            case .unknown: #expect(count <= 1, "w\(number) of unknown outcome stored \(count) times")
            }
        }
        #expect(try await ledger.audit().allSatisfy(\.isConsistent))
        await ledger.close()
    }
}

extension PostgresStallTests {
    /// A request made on an event loop (as the HTTP server makes every one) has its deadline
    /// on that loop: with the server stopped, the deadline answers there, in about the
    /// deadline's time.
    @Test(.timeLimit(.minutes(1)))
    func aDeadlineSetOnAnEventLoopFiresThere() async throws {
        let server = try TemporaryPostgres.Dedicated()
        defer { server.stop() }
        let url = try await server.freshDatabaseURL()
        let ledger = try await PostgresLedger.open(PostgresStoreConfiguration(url: try PostgresURL(url), writeDeadline: .milliseconds(300)))
        _ = try await ledger.apply(TransactionRequest(amount: 1, kind: .credit, description: "warm"), toClient: 1)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let processes = try server.processIDs()
        for pid in processes { kill(pid, SIGSTOP) }
        let request = try TransactionRequest(amount: 1, kind: .credit, description: "stalled")
        let started = ContinuousClock.now
        let (answer, onTheLoop) = await withCheckedContinuation { (continuation: CheckedContinuation<(Result<TransactionReceipt, any Error>, Bool), Never>) in
            loop.execute {
                ledger.apply(request, toClient: 2, idempotencyKey: nil) { result in
                    continuation.resume(returning: (result, loop.inEventLoop))
                }
            }
        }
        let waited = started.duration(to: .now)
        for pid in processes { kill(pid, SIGCONT) }
        // Its CALL went out on the pool's idle connection before the deadline, so the
        // deadline's answer is "outcome unknown" ("not written" if it had not been sent yet).
        let error = #expect(throws: LedgerUnavailable.self) { try answer.get() }
        #expect(error == .outcomeUnknown || error == .notWritten(.deadlineExceeded))
        #expect(onTheLoop, "the deadline's answer came from another thread")
        #expect(waited < .seconds(5), "answered after \(waited)")
        await ledger.close()
        try await group.shutdownGracefully()
    }
}

private final class RequestLog: Sendable {
    enum WriteAnswer: Sendable { case applied, notWritten, unknown }

    struct Summary: CustomStringConvertible {
        var applied = 0, notWritten = 0, unknown = 0, refusedQueueFull = 0, unavailableDuringStall = 0, statements = 0
        var slowest = Duration.zero
        var description: String {
            "applied \(applied), not written \(notWritten) (queue full \(refusedQueueFull)), unknown \(unknown), statements \(statements), slowest \(slowest)"
        }
    }

    private struct State {
        var sent = 0
        var answered = 0
        var latestWrite = -1
        var writes: [Int: WriteAnswer] = [:]
        var summary = Summary()
    }

    private let state = Mutex(State())

    func sent() { state.withLock { $0.sent += 1 } }

    func sent(write number: Int) {
        state.withLock { state in
            state.sent += 1
            state.latestWrite = number
        }
    }

    func answered(_ number: Int, write result: Result<TransactionReceipt, any Error>, after duration: Duration) {
        state.withLock { state in
            state.answered += 1
            state.summary.slowest = max(state.summary.slowest, duration)
            switch result {
            case .success(let receipt):
                guard case .applied = receipt.outcome else { Issue.record("w\(number): \(receipt.outcome)"); return }
                state.writes[number] = .applied
                state.summary.applied += 1
            case .failure(LedgerUnavailable.notWritten(let reason)):
                state.writes[number] = .notWritten
                state.summary.notWritten += 1
                if reason == .queueFull { state.summary.refusedQueueFull += 1 } else { state.summary.unavailableDuringStall += 1 }
            case .failure(LedgerUnavailable.outcomeUnknown):
                state.writes[number] = .unknown
                state.summary.unknown += 1
                state.summary.unavailableDuringStall += 1
            case .failure(let error):
                Issue.record("w\(number): \(error)")
            }
        }
    }

    func answered(statement result: Result<AccountStatement?, any Error>, after duration: Duration) {
        state.withLock { state in
            state.answered += 1
            state.summary.statements += 1
            state.summary.slowest = max(state.summary.slowest, duration)
        }
    }

    var unanswered: Int { state.withLock { $0.sent - $0.answered } }
    /// The number the next write will get.
    var nextWrite: Int { state.withLock { $0.latestWrite + 1 } }
    var summary: Summary { state.withLock { $0.summary } }
    var writes: [Int: WriteAnswer] { state.withLock { $0.writes } }

    /// Writes numbered `first` or later that were applied.
    func appliedAfter(_ first: Int) -> Int {
        state.withLock { state in state.writes.filter { $0.key >= first && $0.value == .applied }.count }
    }
}
