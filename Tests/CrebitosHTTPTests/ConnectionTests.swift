import CrebitosStore
import Foundation
import NIOHTTP1
import XCTest

/// What the server does with connections, below the API: pipelining, keep-alive, broken
/// HTTP, slow and idle clients, `Expect`, and the metrics page.
final class ConnectionTests: XCTestCase {
    private static let valid = #"{"valor": 1, "tipo": "c", "descricao": "x"}"#

    func testPipelinedRequestsAreAnsweredInOrder() async throws {
        try await TestServer.run { server in
            let connection = try RawConnection(port: server.port)
            let post = "POST /clientes/1/transacoes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(Self.valid.utf8.count)\r\n\r\n\(Self.valid)"
            connection.send(post + post + "GET /clientes/1/extrato HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            let answers = connection.readUntilClosed()
            let saldos = answers.components(separatedBy: "\"saldo\":").dropFirst().map { $0.prefix(while: \.isNumber) }.filter { !$0.isEmpty }
            XCTAssertEqual(saldos, ["1", "2"], answers)
            XCTAssertTrue(answers.contains("\"total\":2"), answers)
        }
    }

    func testHTTP10ClosesAfterTheAnswer() async throws {
        try await TestServer.run { server in
            let connection = try RawConnection(port: server.port)
            connection.send("GET /health HTTP/1.0\r\n\r\n")
            let answer = connection.readUntilClosed()
            XCTAssertTrue(answer.hasPrefix("HTTP/1.1 200 OK\r\n"), answer)
            XCTAssertTrue(answer.contains("connection: close"), answer)
        }
    }

    func testBrokenHTTPGetsOneJSON400ThenClose() async throws {
        try await TestServer.run { server in
            let connection = try RawConnection(port: server.port)
            connection.send("POST /clientes/1/transacoes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            let answer = connection.readUntilClosed()
            XCTAssertTrue(answer.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), answer)
            XCTAssertTrue(answer.contains("x-instance: api-test"), answer)
            XCTAssertTrue(answer.contains("{\"error\":\"malformed HTTP request"), answer)
            XCTAssertTrue(connection.closedByServer)
            XCTAssertEqual(try server.storedTransactions, 0)
        }
    }

    /// A client that trickles its body cannot hold the connection: 408, then close, and
    /// nothing written.
    func testATrickledBodyTimesOut() async throws {
        try await TestServer.run(configure: { $0.timeouts.requestBody = .milliseconds(300) }) { server in
            let connection = try RawConnection(port: server.port)
            connection.send("POST /clientes/1/transacoes HTTP/1.1\r\nHost: x\r\nContent-Length: \(Self.valid.utf8.count)\r\n\r\n")
            for character in Self.valid.prefix(5) {
                connection.send(String(character))
                try await Task.sleep(for: .milliseconds(100))
            }
            let answer = connection.readUntilClosed()
            XCTAssertTrue(answer.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), answer)
            XCTAssertTrue(answer.contains("connection: close"), answer)
            XCTAssertTrue(connection.closedByServer)
            XCTAssertEqual(try server.storedTransactions, 0)
        }
    }

    /// A head sent one byte at a time is bounded by the request timeout, like a body, not by
    /// the (much longer) idle timeout.
    func testATrickledHeadTimesOut() async throws {
        try await TestServer.run(configure: {
            $0.timeouts.requestBody = .milliseconds(300)
            $0.timeouts.idle = .seconds(30)
        }) { server in
            let connection = try RawConnection(port: server.port)
            for character in "GET /clientes/1/extrato HTTP/1.1\r\nHost: x\r\n" {
                connection.send(String(character))
                try await Task.sleep(for: .milliseconds(60))
            }
            let answer = connection.readUntilClosed()
            XCTAssertTrue(answer.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), answer)
            XCTAssertTrue(connection.closedByServer)
        }
    }

    /// Requests pipelined behind a write that waits (here: the lock held by someone else)
    /// must not run once the connection is closed: by the server (more parts queued than it
    /// accepts, or bytes that are not HTTP) or by the client (EOF). Only the write already
    /// with the store may still be stored.
    func testNothingQueuedBehindASlowWriteRunsAfterTheConnectionCloses() async throws {
        let post = "POST /clientes/1/transacoes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(Self.valid.utf8.count)\r\n\r\n\(Self.valid)"
        let endings: [(name: String, after: String, eof: Bool)] = [
            ("too many parts queued", String(repeating: post, count: 20), false),
            ("garbage after two requests", post + post + "\u{1}\u{2} not HTTP\r\n\r\n", false),
            ("the client's EOF after two requests", post + post, true),
        ]
        for ending in endings {
            try await TestServer.run { server in
                let lock = try CrossProcessLock(path: CrossProcessLock.lockPath(forDatabase: server.settings.databasePath))
                let held = DispatchSemaphore(value: 0)
                let holder = Thread {
                    _ = try? lock.withExclusiveLock {
                        held.signal()
                        usleep(700_000)
                    }
                }
                holder.start()
                held.wait()
                let connection = try RawConnection(port: server.port)
                connection.send(post + ending.after)
                if ending.eof { connection.shutdownWrite() }
                _ = connection.readUntilClosed()
                try await Task.sleep(for: .milliseconds(1500))  // the lock is free again long before
                XCTAssertLessThanOrEqual(try server.storedTransactions, 1, ending.name)
            }
        }
    }

    /// A client that sends requests and never reads the answers stops being read: its
    /// sends block once the socket buffers are full, rather than the instance buffering
    /// answers until its memory limit.
    func testAClientThatNeverReadsIsNoLongerRead() async throws {
        try await TestServer.run { server in
            let connection = try RawConnection(port: server.port)
            let flood = connection.flood("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", limit: 64 << 20, seconds: 30)
            XCTAssertTrue(flood.blocked, "sent \(flood.sent) bytes of requests without the server ever refusing to read")
        }
    }

    func testConnectionsBeyondTheCapAreClosedAtOnce() async throws {
        try await TestServer.run(configure: { $0.maximumConnections = 2 }) { server in
            let first = try RawConnection(port: server.port)
            let second = try RawConnection(port: server.port)
            first.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            second.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            try await Task.sleep(for: .milliseconds(200))
            let third = try RawConnection(port: server.port)
            third.send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            XCTAssertEqual(third.readUntilClosed(), "")
            XCTAssertTrue(third.closedByServer)
        }
    }

    func testAnIdleConnectionIsClosed() async throws {
        try await TestServer.run(configure: { $0.timeouts.idle = .milliseconds(300) }) { server in
            let connection = try RawConnection(port: server.port)
            connection.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            // The answer, then nothing: the server closes the connection by itself.
            let answer = connection.readUntilClosed()
            XCTAssertTrue(answer.hasPrefix("HTTP/1.1 200 OK\r\n"), answer)
            XCTAssertFalse(answer.contains("connection: close"), "kept alive until idle: \(answer)")
            XCTAssertTrue(connection.closedByServer)
        }
    }

    func testExpectContinue() async throws {
        try await TestServer.run { server in
            let connection = try RawConnection(port: server.port)
            connection.send("POST /clientes/1/transacoes HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                + "Content-Length: \(Self.valid.utf8.count)\r\nConnection: close\r\n\r\n")
            try await Task.sleep(for: .milliseconds(100))
            connection.send(Self.valid)
            let answer = connection.readUntilClosed()
            XCTAssertTrue(answer.hasPrefix("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), answer)

            let other = try RawConnection(port: server.port)
            other.send("POST /clientes/1/transacoes HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n"
                + "Content-Length: \(Self.valid.utf8.count)\r\n\r\n\(Self.valid)")
            XCTAssertTrue(other.readUntilClosed().hasPrefix("HTTP/1.1 417 Expectation Failed\r\n"))
            XCTAssertEqual(try server.storedTransactions, 1)
        }
    }

    func testADeclaredBodyOverTheLimitIsRefusedBeforeItArrives() async throws {
        try await TestServer.run { server in
            let connection = try RawConnection(port: server.port)
            connection.send("POST /clientes/1/transacoes HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
            let answer = connection.readUntilClosed()
            XCTAssertTrue(answer.hasPrefix("HTTP/1.1 413 Payload Too Large\r\n"), answer)
        }
    }

    func testMetricsCountRequestsByRouteAndStatus() async throws {
        try await TestServer.run { server in
            _ = try await server.client.transact("1", Self.valid)
            _ = try await server.client.transact("1", Self.valid)
            _ = try await server.client.statement("6")
            let page = try await server.client.execute(.GET, "/metrics")
            XCTAssertEqual(page.status, .ok)
            XCTAssertTrue(page.headers.first(name: "content-type")?.hasPrefix("text/plain") ?? false)
            XCTAssertTrue(page.text.contains(#"crebitos_http_requests_total{route="transacoes",status="200"} 2"#), page.text)
            XCTAssertTrue(page.text.contains(#"crebitos_http_requests_total{route="extrato",status="404"} 1"#), page.text)
            XCTAssertTrue(page.text.contains(#"crebitos_http_request_duration_seconds_count{route="transacoes"} 2"#), page.text)
            // The write path's own: two commits of one write each, the lock waits, the WAL.
            XCTAssertTrue(page.text.contains("crebitos_commit_batch_size_count 2"), page.text)
            XCTAssertTrue(page.text.contains("crebitos_commit_batch_size_sum 2"), page.text)
            XCTAssertTrue(page.text.contains("crebitos_lock_wait_seconds_count 2"), page.text)
            XCTAssertTrue(page.text.contains("crebitos_write_queue_depth 1"), page.text)
            let wal = page.text.split(separator: "\n").first { $0.hasPrefix("crebitos_wal_bytes ") }
            XCTAssertGreaterThan(Double(wal?.split(separator: " ").last ?? "") ?? 0, 0, page.text)
        }
        try await TestServer.run(configure: { $0.metricsEnabled = false }) { server in
            let page = try await server.client.execute(.GET, "/metrics")
            XCTAssertEqual(page.status, .notFound)
        }
    }

    /// The time from nginx's `X-Request-Start` stamp to the instance is counted by route, for
    /// the requests that carry a stamp and only those.
    func testMetricsCountTheWaitSinceTheBalancersStamp() async throws {
        try await TestServer.run { server in
            let stamp = String(format: "t=%.3f", Date().timeIntervalSince1970 - 0.05)
            _ = try await server.client.execute(.GET, "/clientes/1/extrato", headers: ["X-Request-Start": stamp])
            _ = try await server.client.statement("1")  // no stamp: not counted
            _ = try await server.client.transact("1", Self.valid, headers: ["X-Request-Start": "soon"])  // unusable: not counted
            let page = try await server.client.execute(.GET, "/metrics")
            XCTAssertTrue(page.text.contains(#"crebitos_http_request_queue_seconds_count{route="extrato"} 1"#), page.text)
            // Stamped 50 ms before it was sent: it waited at least that long, never less.
            XCTAssertTrue(page.text.contains(#"crebitos_http_request_queue_seconds_bucket{route="extrato",le="0.025"} 0"#), page.text)
            XCTAssertTrue(page.text.contains(#"crebitos_http_request_queue_seconds_count{route="transacoes"} 0"#), page.text)
        }
    }
}
