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
            directory: directory, extraArguments: ["--drain-ms", "1500"])
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            try server.start()
            try await server.waitUntilReady(client: client)
            let before = try await client.execute(HTTPClientRequest(url: server.baseURL + "/clientes/1/extrato"), timeout: .seconds(5))
            XCTAssertEqual(before.status, .ok)
            XCTAssertNil(before.headers.first(name: "connection").flatMap { $0 == "close" ? $0 : nil })
            _ = try await before.body.collect(upTo: 4096)

            server.sendTerminate()
            try await Task.sleep(for: .milliseconds(300))

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
}
