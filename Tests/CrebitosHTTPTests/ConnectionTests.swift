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
}
