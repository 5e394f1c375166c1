import AsyncHTTPClient
import Foundation
import NIOCore
import XCTest

/// SIGTERM with a client holding a keep-alive connection, as nginx does.
final class GracefulShutdownTests: XCTestCase {
    func testAfterSIGTERMTheServerKeepsAnsweringWithConnectionCloseThenExitsCleanly() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("crebitos-term-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let server = try ServerProcess(
            name: "api01", databasePath: directory.appendingPathComponent("rinha.db").path, listen: "127.0.0.1:0",
            directory: directory, extraArguments: ["--drain-ms", "\(Self.drainMilliseconds)"])
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            try server.start()
            try await server.waitUntilReady(client: client)
            let before = try await client.execute(HTTPClientRequest(url: server.baseURL + "/clientes/1/extrato"), timeout: .seconds(5))
            XCTAssertEqual(before.status, .ok)
            XCTAssertNil(before.headers.first(name: "connection").flatMap { $0 == "close" ? $0 : nil })
            _ = try await before.body.collect(upTo: 4096)

            server.sendTerminate()
            // Wait for the drain to have begun (its log line), not for a fixed time: on a
            // loaded machine the signal can take longer than any fixed pause to be handled,
            // and the request below would then be answered as before the signal.
            try await waitForLog("shutting down: closing connections after their next answer", of: server)

            // Inside the drain period: still served, and told to close the connection.
            var request = HTTPClientRequest(url: server.baseURL + "/clientes/1/transacoes")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: #"{"valor": 5, "tipo": "c", "descricao": "drain"}"#))
            let during = try await client.execute(request, timeout: .seconds(5))
            XCTAssertEqual(during.status, .ok)
            XCTAssertEqual(during.headers.first(name: "connection")?.lowercased(), "close")
            _ = try await during.body.collect(upTo: 4096)

            server.process.waitUntilExit()
            XCTAssertEqual(server.process.terminationStatus, 0, server.log)
            XCTAssertTrue(server.log.contains("crebitos stopped"), server.log)
        } catch {
            server.terminate()
            try await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    /// Long enough that the request sent once the drain began still falls inside it on a
    /// loaded machine (the server stays up this long after SIGTERM whatever happens).
    static let drainMilliseconds = 5_000

    /// Polls the server's log every 10 ms, up to 10 s (a bound for a broken test).
    private func waitForLog(_ line: String, of server: ServerProcess) async throws {
        for _ in 0..<1_000 {
            if server.log.contains(line) { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTFail("the server never logged \"\(line)\": \(server.log)")
    }
}
