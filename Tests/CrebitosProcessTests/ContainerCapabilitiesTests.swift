import AsyncHTTPClient
import CrebitosTestSupport
import Foundation
import NIOCore
import XCTest


/// The server as a container runs it: without root's full capability set (Docker's default
/// set has no CAP_NET_ADMIN). A socket option that needs a capability the container lacks
/// fails there and nowhere else; this is where the tests meet it.
final class ContainerCapabilitiesTests: XCTestCase {
    /// CAP_NET_ADMIN is capability 12 (linux/capability.h).
    private static let netAdmin: UInt64 = 1 << 12

    func testWithoutNetAdminTheServerAnswersOverTCPAndAUnixSocket() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("crebitos-caps-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let database = directory.appendingPathComponent("rinha.db").path
        // ServerProcess starts every server through scripts/with-container-capabilities.
        let servers = try ServerProcess.pair(databasePath: database, directory: directory)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            for server in servers {
                try server.start()
                try await server.waitUntilReady(client: client)
                if getuid() == 0 {
                    // Else the wrapper did nothing, and this test would prove nothing.
                    let capabilities = try XCTUnwrap(server.effectiveCapabilities, "CapEff of \(server.name)")
                    XCTAssertEqual(capabilities & Self.netAdmin, 0, "\(server.name) still has CAP_NET_ADMIN")
                }
                // Several requests on one keep-alive connection, a write among them.
                var request = HTTPClientRequest(url: server.baseURL + "/clientes/1/transacoes")
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(string: #"{"valor": 1, "tipo": "c", "descricao": "caps"}"#))
                let write = try await client.execute(request, timeout: .seconds(5))
                XCTAssertEqual(write.status, .ok, server.name)
                _ = try await write.body.collect(upTo: 4096)
                let statement = try await client.execute(
                    HTTPClientRequest(url: server.baseURL + "/clientes/1/extrato"), timeout: .seconds(5))
                XCTAssertEqual(statement.status, .ok, server.name)
                _ = try await statement.body.collect(upTo: 4096)
            }
        } catch {
            for server in servers { server.terminate() }
            try await client.shutdown()
            throw error
        }
        for server in servers { server.terminate() }
        try await client.shutdown()
    }
}

/// A compose stack starts the instances beside PostgreSQL, not after it (podman-compose
/// ignores `condition: service_healthy`): an instance whose server is not up yet waits for it,
/// saying where it looks and why it failed, instead of exiting on the first refusal.
final class PostgresStartupTests: XCTestCase {
    func testAnInstanceWaitsForAnAbsentServerAndSaysWhereAndWhy() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("crebitos-pgwait-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // A port nothing listens on: bound and closed again at once.
        let port = try TemporaryPostgres.freeLoopbackPort()
        let server = try ServerProcess(
            name: "api01", databasePath: "postgres://rinha:secret@127.0.0.1:\(port)/rinha", listen: "127.0.0.1:0",
            directory: directory)
        try server.start()
        defer { server.terminate() }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, server.log.components(separatedBy: "not reachable yet").count < 3 {
            XCTAssertTrue(server.process.isRunning, "the instance exited instead of waiting:\n\(server.log)")
            try await Task.sleep(for: .milliseconds(100))
        }
        let log = server.log
        XCTAssertTrue(server.process.isRunning, log)
        XCTAssertGreaterThanOrEqual(log.components(separatedBy: "not reachable yet").count - 1, 2, log)
        XCTAssertTrue(log.contains("127.0.0.1:\(port)"), "the log names the server:\n\(log)")
        XCTAssertTrue(log.lowercased().contains("connection refused") || log.contains("ECONNREFUSED"), "the log says why:\n\(log)")
        XCTAssertFalse(log.contains("secret"), "the password never reaches the log:\n\(log)")
        XCTAssertFalse(log.contains("Generic description"), "the log says what failed in words:\n\(log)")
    }
}
