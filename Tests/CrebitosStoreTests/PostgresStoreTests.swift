import CrebitosLedger
@testable import CrebitosPostgres
import CrebitosTestSupport
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

/// What only the PostgreSQL store has: its answer when a client's row stays locked by
/// someone else (a frozen instance in the middle of a transaction, a person in psql).
struct PostgresStoreTests {
    @Test func aWriteWaitingPastTheDeadlineForARowLockIsRolledBackAndAnsweredNotWritten() async throws {
        let url = try await TemporaryPostgres.freshDatabaseURL()
        // Long enough that the unblocked writes below meet it on a busy machine.
        let ledger = try await PostgresLedger.open(PostgresStoreConfiguration(url: try PostgresURL(url), writeDeadline: .seconds(1)))
        let components = try #require(URLComponents(string: url))
        let logger = Logger(label: "test")
        let outsider = try await PostgresConnection.connect(
            configuration: .init(
                host: try #require(components.host), port: components.port ?? 5432, username: components.user ?? "postgres",
                password: components.password, database: String(components.path.dropFirst()), tls: .disable),
            id: 99, logger: logger)
        do {
            try await outsider.query("BEGIN", logger: logger)
            try await outsider.query("SELECT saldo FROM clientes WHERE id = 1 FOR UPDATE", logger: logger)
            // Either the server's statement_timeout rolls it back (transactionFailed) or, on
            // a machine too busy for the server's answer to come first, the store's own
            // deadline answers (deadlineExceeded): both are "not written", which is the rule.
            let refusal = await #expect(throws: LedgerUnavailable.self) {
                try await ledger.apply(TransactionRequest(amount: 5, kind: .credit, description: "blocked"), toClient: 1)
            }
            #expect(refusal == .notWritten(.transactionFailed) || refusal == .notWritten(.deadlineExceeded))
            // Other clients' rows are not locked: their writes go on meanwhile.
            let other = try await ledger.apply(TransactionRequest(amount: 5, kind: .credit, description: "free"), toClient: 2)
            #expect(other.outcome == .applied(Balance(limit: 80_000, balance: 5)))
            try await outsider.query("ROLLBACK", logger: logger)
        } catch {
            try? await outsider.close()
            await ledger.close()
            throw error
        }
        try await outsider.close()
        let after = try await ledger.apply(TransactionRequest(amount: 7, kind: .credit, description: "after"), toClient: 1)
        #expect(after.outcome == .applied(Balance(limit: 100_000, balance: 7)), "the refused write was not stored")
        #expect(try await ledger.audit().map(\.transactionCount) == [1, 1, 0, 0, 0])
        await ledger.close()
    }

    @Test func errorsBeforeCommitMeanNotWrittenAndALostCommitMeansUnknown() {
        struct ConnectionLost: Error {}
        #expect(PostgresLedger.unavailable(ConnectionLost(), commitSent: false) == .notWritten(.transactionFailed))
        #expect(PostgresLedger.unavailable(ConnectionLost(), commitSent: true) == .outcomeUnknown)
    }

    /// A write whose query never returns is answered by its deadline (the PostgreSQL server
    /// killed under load left writes unanswered forever, docs/FAULTS.md finding 5); the
    /// answer and the COMMIT can never contradict each other.
    @Test func aWriteAnsweredByItsDeadlineCanNoLongerCommit() {
        let (attempt, answers) = recordedAttempt()
        attempt.expire()
        #expect(!attempt.startCommit())
        attempt.answer(.success(TransactionReceipt(outcome: .unknownClient)))
        attempt.expire()
        expectOneAnswer(answers.all, failingWith: .notWritten(.deadlineExceeded))
    }

    @Test func aWriteWhoseCommitWasSentIsAnsweredOutcomeUnknownByItsDeadline() {
        let (attempt, answers) = recordedAttempt()
        #expect(attempt.startCommit())
        attempt.expire()
        attempt.answer(.success(TransactionReceipt(outcome: .unknownClient)))
        expectOneAnswer(answers.all, failingWith: .outcomeUnknown)
    }

    @Test func aWriteThatFinishesFirstIsAnsweredWithItsResultOnly() {
        let (attempt, answers) = recordedAttempt()
        #expect(attempt.startCommit())
        attempt.answer(.success(TransactionReceipt(outcome: .unknownClient)))
        attempt.expire()
        let given = answers.all
        #expect(given.count == 1)
        #expect((try? given.first?.get())?.outcome == .unknownClient)
    }

    /// A write attempt whose every answer is recorded, to see how many it gave and which.
    private func recordedAttempt() -> (PostgresLedger.WriteAttempt, AnswerLog) {
        let answers = AnswerLog()
        return (PostgresLedger.WriteAttempt { answers.record($0) }, answers)
    }

    private func expectOneAnswer(
        _ given: [Result<TransactionReceipt, any Error>], failingWith expected: LedgerUnavailable,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(given.count == 1, sourceLocation: sourceLocation)
        if case .failure(let error as LedgerUnavailable)? = given.first {
            #expect(error == expected, sourceLocation: sourceLocation)
        } else {
            Issue.record("expected \(expected), got \(String(describing: given.first))", sourceLocation: sourceLocation)
        }
    }
}

private final class AnswerLog: Sendable {
    private let given = Mutex<[Result<TransactionReceipt, any Error>]>([])
    func record(_ answer: Result<TransactionReceipt, any Error>) { given.withLock { $0.append(answer) } }
    var all: [Result<TransactionReceipt, any Error>] { given.withLock { $0 } }
}
