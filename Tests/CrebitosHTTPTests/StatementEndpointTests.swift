import Foundation
import NIOHTTP1
import XCTest

final class StatementEndpointTests: XCTestCase {
    /// `2024-01-17T02:34:41.217753Z`: UTC, microseconds, `Z`.
    private static let timestampPattern = try! NSRegularExpression(
        pattern: #"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"#)

    private static func assertTimestamp(_ value: Any?, file: StaticString = #filePath, line: UInt = #line) {
        guard let text = value as? String else { return XCTFail("not a string: \(String(describing: value))", file: file, line: line) }
        let range = NSRange(text.startIndex..., in: text)
        XCTAssertNotNil(Self.timestampPattern.firstMatch(in: text, range: range), text, file: file, line: line)
    }

    func testTheShapeOfSpecMd() async throws {
        try await TestServer.run { server in
            let client = server.client
            _ = try await client.transact("1", #"{"valor": 10, "tipo": "c", "descricao": "descricao"}"#)
            _ = try await client.transact("1", #"{"valor": 9108, "tipo": "d", "descricao": "\"aspas\""}"#)
            let response = try await client.statement("1")
            XCTAssertEqual(response.status, .ok)
            XCTAssertEqual(response.headers.first(name: "content-type"), "application/json")
            let json = try response.json
            XCTAssertEqual(Set(json.keys), ["saldo", "ultimas_transacoes"])
            let saldo = try XCTUnwrap(json["saldo"] as? [String: Any])
            XCTAssertEqual(Set(saldo.keys), ["total", "data_extrato", "limite"])
            XCTAssertEqual(saldo["total"] as? Int, -9098)
            XCTAssertEqual(saldo["limite"] as? Int, 100_000)
            Self.assertTimestamp(saldo["data_extrato"])
            let entries = try XCTUnwrap(json["ultimas_transacoes"] as? [[String: Any]])
            XCTAssertEqual(entries.count, 2)
            XCTAssertEqual(Set(entries[0].keys), ["valor", "tipo", "descricao", "realizada_em"])
            XCTAssertEqual(entries[0]["valor"] as? Int, 9108)
            XCTAssertEqual(entries[0]["tipo"] as? String, "d")
            XCTAssertEqual(entries[0]["descricao"] as? String, "\"aspas\"")
            XCTAssertEqual(entries[1]["descricao"] as? String, "descricao")
            XCTAssertEqual(entries[1]["tipo"] as? String, "c")
            for entry in entries { Self.assertTimestamp(entry["realizada_em"]) }
        }
    }

    func testAtMostTenNewestFirst() async throws {
        try await TestServer.run { server in
            let client = server.client
            for index in 1...15 {
                let response = try await client.transact("5", #"{"valor": \#(index), "tipo": "c", "descricao": "n\#(index)"}"#)
                XCTAssertEqual(response.status, .ok)
            }
            let statement = try await client.statement("5")
            let entries = try XCTUnwrap(try statement.json["ultimas_transacoes"] as? [[String: Any]])
            XCTAssertEqual(entries.map { $0["descricao"] as? String }, (6...15).reversed().map { "n\($0)" })
        }
    }

    func testTheChallengesPerClientValidation() async throws {
        // Phase 2 of the official test, for client 4: toma, devolve, then a statement
        // showing devolve first and toma second.
        try await TestServer.run { server in
            let client = server.client
            let initial = try await client.statement("4").json
            XCTAssertEqual((initial["saldo"] as? [String: Any])?["total"] as? Int, 0)
            XCTAssertEqual((initial["saldo"] as? [String: Any])?["limite"] as? Int, 10_000_000)
            XCTAssertEqual((initial["ultimas_transacoes"] as? [Any])?.count, 0)
            _ = try await client.transact("4", #"{"valor": 1, "tipo": "c", "descricao": "toma"}"#)
            _ = try await client.transact("4", #"{"valor": 1, "tipo": "d", "descricao": "devolve"}"#)
            let statement = try await client.statement("4")
            let entries = try XCTUnwrap(try statement.json["ultimas_transacoes"] as? [[String: Any]])
            XCTAssertEqual(entries.map { $0["descricao"] as? String }, ["devolve", "toma"])
            XCTAssertEqual(entries.map { $0["tipo"] as? String }, ["d", "c"])
        }
    }
}
