import CrebitosHTTP
import CrebitosLedger
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import XCTest

/// How the HTTP layer answers the store's failures. The ledger here is a stand-in that
/// fails on purpose: these tests are about the answers, not about how a store fails
/// (the store's own tests make real SQLite fail).
final class StoreFailureTests: XCTestCase {
    private struct FailingLedger: Ledger {
        let error: any Error
        func apply(
            _ request: TransactionRequest, toClient clientID: Int64, idempotencyKey: IdempotencyKey?, alreadyWaited: Duration,
            completion: @escaping @Sendable (Result<TransactionReceipt, any Error>) -> Void
        ) {
            completion(.failure(error))
        }
        func statement(forClient clientID: Int64, completion: @escaping @Sendable (Result<AccountStatement?, any Error>) -> Void) {
            completion(.failure(error))
        }
    }

    private func answer(_ ledger: some Ledger, _ request: APIRequest) -> APIResponse {
        let answer = Mutex<APIResponse?>(nil)
        APIResponder(ledger: ledger, instanceName: "test").respond(to: request) { response in
            answer.withLock { $0 = response }
        }
        return answer.withLock { $0! }
    }

    private let write = APIRequest(
        method: .POST, uri: "/clientes/1/transacoes", headers: ["Idempotency-Key": "k1"],
        body: ByteBuffer(string: #"{"valor": 1, "tipo": "c", "descricao": "x"}"#))

    func testNotWrittenIs503SayingNothingWasStored() {
        let reasons: [(LedgerUnavailable.Reason, String)] = [
            (.deadlineExceeded, "deadline_exceeded"), (.queueFull, "queue_full"),
            (.transactionFailed, "transaction_failed"), (.shuttingDown, "shutting_down"),
        ]
        for (reason, code) in reasons {
            let response = answer(FailingLedger(error: LedgerUnavailable.notWritten(reason)), write)
            XCTAssertEqual(response.status, .serviceUnavailable)
            XCTAssertTrue(response.retryAfterOneSecond)
            let body = try? JSONSerialization.jsonObject(with: Data(String(buffer: response.body).utf8)) as? [String: String]
            XCTAssertEqual(body?["outcome"], "not_written", String(buffer: response.body))
            XCTAssertEqual(body?["reason"], code, String(buffer: response.body))
            XCTAssertTrue(body?["error"]?.contains("nothing was stored") == true, String(buffer: response.body))
        }
    }

    /// 500, never 503: a client that resends every 503 as it is must not resend this one
    /// without its key. The body says so in a field a program reads.
    func testAnUnknownOutcomeIs500WithOutcomeUnknownAndSaysARetryWithTheKeyIsSafe() {
        for error: any Error in [LedgerUnavailable.outcomeUnknown, CancellationError()] {
            let response = answer(FailingLedger(error: error), write)
            XCTAssertEqual(response.status, .internalServerError)
            XCTAssertTrue(response.retryAfterOneSecond)
            let text = String(buffer: response.body)
            let body = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: String]
            XCTAssertEqual(body?["outcome"], "unknown", text)
            XCTAssertNil(body?["reason"], text)
            XCTAssertTrue(text.contains("outcome is unknown") && text.contains("same Idempotency-Key"), text)
            XCTAssertFalse(text.contains("nothing was stored"), text)
        }
    }

    func testAFailedStatementIs503() {
        let response = answer(FailingLedger(error: CancellationError()), APIRequest(method: .GET, uri: "/clientes/1/extrato"))
        XCTAssertEqual(response.status, .serviceUnavailable)
    }
}
