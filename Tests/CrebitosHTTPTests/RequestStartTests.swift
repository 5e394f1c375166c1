@testable import CrebitosHTTP
import Foundation
import NIOHTTP1
import XCTest

/// A write's deadline counts from when the request entered the system (nginx's
/// `X-Request-Start`), so that a request nginx already gave up on is never written later.
final class RequestStartTests: XCTestCase {
    func testTheStampsFormsAreReadByMagnitude() {
        XCTAssertEqual(RequestStart.microseconds("t=1733222400.123"), 1_733_222_400_123_000)  // nginx's ${msec}
        XCTAssertEqual(RequestStart.microseconds("t=1733222400"), 1_733_222_400_000_000)
        XCTAssertEqual(RequestStart.microseconds("t=1733222400.1234567"), 1_733_222_400_123_456)
        XCTAssertEqual(RequestStart.microseconds("t=1733222400123"), 1_733_222_400_123_000)  // milliseconds
        XCTAssertEqual(RequestStart.microseconds("1733222400123456"), 1_733_222_400_123_456)  // microseconds
        for garbage in ["", "t=", "t=abc", "t=-5", "t=1.", "t=.5", "t=1733222400123.5", "t=1e9", "t=99999999999999999999"] {
            XCTAssertNil(RequestStart.microseconds(garbage), garbage)
        }
    }

    func testTheWaitIsMeasuredFromTheStampAndNeverNegative() {
        let now: Int64 = 1_733_222_400_000_000
        // What a write's deadline counts from: the stamp's wait, or none without one.
        let waited = { (headers: HTTPHeaders) in RequestStart.waitedIfStamped(headers, nowMicroseconds: now) ?? .zero }
        XCTAssertEqual(waited(["X-Request-Start": "t=1733222397.500"]), .milliseconds(2500))
        // A stamp from the future (a balancer's clock ahead of ours) is no wait, never a refusal.
        XCTAssertEqual(waited(["X-Request-Start": "t=1733222460.000"]), .zero)
        XCTAssertEqual(waited([:]), .zero)
        XCTAssertEqual(waited(["X-Request-Start": "soon"]), .zero)
    }

    func testAWaitIsKnownOnlyWithAUsableStamp() {
        let now: Int64 = 1_733_222_400_000_000
        XCTAssertEqual(RequestStart.waitedIfStamped(["X-Request-Start": "t=1733222399.990"], nowMicroseconds: now), .milliseconds(10))
        XCTAssertEqual(RequestStart.waitedIfStamped(["X-Request-Start": "t=1733222460.000"], nowMicroseconds: now), .zero)
        XCTAssertNil(RequestStart.waitedIfStamped([:], nowMicroseconds: now))
        XCTAssertNil(RequestStart.waitedIfStamped(["X-Request-Start": "soon"], nowMicroseconds: now))
    }

    /// A write that entered the system longer ago than the write deadline is answered 503
    /// "not written" and nothing is stored; a fresh stamp is written as usual.
    func testAWriteStampedPastItsDeadlineIsRefusedAndNotStored() async throws {
        try await TestServer.run { server in
            let body = Array(#"{"valor": 5, "tipo": "c", "descricao": "old"}"#.utf8)
            let now = Date().timeIntervalSince1970
            let stale = try await server.client.execute(
                .POST, "/clientes/1/transacoes",
                headers: ["Content-Type": "application/json", "X-Request-Start": String(format: "t=%.3f", now - 3)], body: body)
            XCTAssertEqual(stale.status, .serviceUnavailable, stale.text)
            XCTAssertEqual(try stale.json["outcome"] as? String, "not_written")
            XCTAssertEqual(try stale.json["reason"] as? String, "deadline_exceeded")
            XCTAssertEqual(try server.storedTransactions, 0)

            let fresh = try await server.client.execute(
                .POST, "/clientes/1/transacoes",
                headers: ["Content-Type": "application/json", "X-Request-Start": String(format: "t=%.3f", Date().timeIntervalSince1970)],
                body: body)
            XCTAssertEqual(fresh.status, .ok, fresh.text)
            XCTAssertEqual(try server.storedTransactions, 1)
        }
    }
}
