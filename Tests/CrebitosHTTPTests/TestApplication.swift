import CrebitosApp
import CrebitosStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import XCTest

/// The server's own router on a ledger in a temporary file, driven in-process.
struct TestApplication {
    let directory: URL
    let ledger: SQLiteLedger

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("crebitos-http-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        ledger = try SQLiteLedger.open(StoreConfiguration(path: directory.appendingPathComponent("rinha.db").path))
    }

    func test(_ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let app = Application(router: buildRouter(ledger: ledger, instanceName: "api-test"))
        try await app.test(.router, body)
        try ledger.close()
        try? FileManager.default.removeItem(at: directory)
    }
}

extension TestClientProtocol {
    /// POST a transaction body (raw text, so tests can send anything).
    func transact(
        _ client: String, _ body: String, contentType: String? = "application/json", headers extra: HTTPFields = [:]
    ) async throws -> TestResponse {
        var headers = extra
        if let contentType { headers[.contentType] = contentType }
        return try await execute(
            uri: "/clientes/\(client)/transacoes", method: .post, headers: headers,
            body: ByteBuffer(string: body))
    }

    func statement(_ client: String) async throws -> TestResponse {
        try await execute(uri: "/clientes/\(client)/extrato", method: .get)
    }
}

extension TestResponse {
    var json: [String: Any] {
        get throws {
            let data = Data(body.readableBytesView)
            return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any], String(buffer: body))
        }
    }

    var text: String { String(buffer: body) }
}
