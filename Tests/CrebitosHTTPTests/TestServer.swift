import AsyncHTTPClient
import CrebitosApp
import CrebitosLedger
import CrebitosStore
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import XCTest

/// The application the server runs, built with `buildApplication(settings)` on a database
/// in a temporary directory and listening on an ephemeral port, driven over real sockets.
struct TestServer {
    let settings: ServerSettings
    let directory: URL
    let port: Int
    let client: TestClient

    /// Runs `body` against a fresh server, then shuts it down and removes its files.
    static func run(
        configure: (inout ServerSettings) -> Void = { _ in },
        _ body: @Sendable (TestServer) async throws -> Void
    ) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("crebitos-http-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        var settings = ServerSettings(
            databasePath: directory.appendingPathComponent("data/rinha.db").path,
            listen: .tcp(host: "127.0.0.1", port: 0), instanceName: "api-test", logLevel: .warning,
            drainPeriod: .milliseconds(50))
        configure(&settings)
        let app = try await buildApplication(settings, handleSignals: false)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.run() }
            do {
                let address = try await app.listeningAddress.get()
                let server = TestServer(
                    settings: settings, directory: directory, port: address.port!, client: TestClient(port: address.port!))
                try await body(server)
            } catch {
                await app.shutDown()
                throw error
            }
            await app.shutDown()
            try await group.waitForAll()
        }
    }

    /// The ledger on the same file, opened beside the server's (as a second process would),
    /// to audit what the server stored.
    func audit() throws -> [ClientAudit] {
        let ledger = try SQLiteLedger.open(StoreConfiguration(path: settings.databasePath))
        defer { try? ledger.close() }
        return try ledger.audit()
    }

    var storedTransactions: Int {
        get throws { try audit().map(\.transactionCount).reduce(0, +) }
    }
}

/// An answer as the tests look at it.
struct TestResponse: Sendable {
    let status: HTTPResponseStatus
    let headers: HTTPHeaders
    let text: String

    var json: [String: Any] {
        get throws {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], text)
        }
    }
}

/// HTTP requests to the test server with AsyncHTTPClient (a real client on a real socket).
struct TestClient: Sendable {
    let port: Int

    func execute(
        _ method: HTTPMethod, _ path: String, headers: HTTPHeaders = [:], body: [UInt8]? = nil
    ) async throws -> TestResponse {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        request.headers = headers
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return TestResponse(status: response.status, headers: response.headers, text: String(buffer: bytes))
    }

    /// POST a transaction body (raw text, so tests can send anything).
    func transact(
        _ client: String, _ body: String, contentType: String? = "application/json", headers extra: HTTPHeaders = [:]
    ) async throws -> TestResponse {
        var headers = extra
        if let contentType { headers.add(name: "content-type", value: contentType) }
        return try await execute(.POST, "/clientes/\(client)/transacoes", headers: headers, body: Array(body.utf8))
    }

    func statement(_ client: String) async throws -> TestResponse {
        try await execute(.GET, "/clientes/\(client)/extrato")
    }
}
