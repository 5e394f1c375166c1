import CrebitosLedger
import Synchronization
import XCTest

final class InFlightIdempotencyKeysTests: XCTestCase {
    private typealias Completion = @Sendable (Result<TransactionReceipt, any Error>) -> Void

    func testASecondWriteWithTheSameClientAndKeyIsAnsweredInFlightUntilTheFirstAnswered() throws {
        let keys = InFlightIdempotencyKeys()
        let key = try XCTUnwrap(IdempotencyKey("1"))
        let applied = TransactionReceipt(outcome: .applied(Balance(limit: 0, balance: 1)))
        let answers = Mutex<[TransactionOutcome]>([])
        let record: Completion = { result in answers.withLock { $0.append(try! result.get().outcome) } }
        let pendingFirst = Mutex<Completion?>(nil)

        keys.whileClaimed(key, forClient: 1, completion: record) { completion in pendingFirst.withLock { $0 = completion } }
        var secondRan = false
        keys.whileClaimed(key, forClient: 1, completion: record) { _ in secondRan = true }
        XCTAssertFalse(secondRan, "the duplicate is not written")
        XCTAssertEqual(answers.withLock { $0 }, [.idempotencyKeyInFlight])
        // Another client's key "1" is another key.
        keys.whileClaimed(key, forClient: 2, completion: record) { completion in completion(.success(applied)) }
        XCTAssertEqual(answers.withLock { $0 }, [.idempotencyKeyInFlight, applied.outcome])

        pendingFirst.withLock { $0 }?(.success(applied))
        XCTAssertEqual(keys.count, 0)
        keys.whileClaimed(key, forClient: 1, completion: record) { completion in completion(.success(applied)) }
        XCTAssertEqual(answers.withLock { $0 }, [.idempotencyKeyInFlight, applied.outcome, applied.outcome, applied.outcome])
    }
}
