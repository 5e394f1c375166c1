import Foundation
import NIOCore
import NIOHTTP1
import XCTest

final class TransactionEndpointTests: XCTestCase {
    func testCreditAndDebitAnswerLimiteAndSaldo() async throws {
        try await TestServer.run { server in
            let client = server.client
            let credit = try await client.transact("1", #"{"valor": 1000, "tipo": "c", "descricao": "descricao"}"#)
            XCTAssertEqual(credit.status, .ok)
            XCTAssertEqual(credit.headers.first(name: "content-type"), "application/json")
            XCTAssertEqual(credit.headers.first(name: "x-instance"), "api-test")
            XCTAssertEqual(credit.text, #"{"limite":100000,"saldo":1000}"#)
            let debit = try await client.transact("1", #"{"valor": 10098, "tipo": "d", "descricao": "ação"}"#)
            XCTAssertEqual(debit.status, .ok)
            XCTAssertEqual(debit.text, #"{"limite":100000,"saldo":-9098}"#)
        }
    }

    func testDebitToTheLimitThenOneCentPast() async throws {
                try await TestServer.run { server in
            let client = server.client
            let toLimit = try await client.transact("2", #"{"valor": 80000, "tipo": "d", "descricao": "tudo"}"#)
            XCTAssertEqual(toLimit.status, .ok)
            XCTAssertEqual(toLimit.text, #"{"limite":80000,"saldo":-80000}"#)
            let past = try await client.transact("2", #"{"valor": 1, "tipo": "d", "descricao": "mais"}"#)
            XCTAssertEqual(past.status, .unprocessableEntity)
            XCTAssertEqual(try past.json["field"] as? String, "valor")
            XCTAssertEqual(try server.audit()[1].transactionCount, 1)
        }
    }

    /// Every invalid payload of SPEC.md and more: 422, with a message naming the field,
    /// and nothing written.
    func testInvalidPayloadsAre422AndWriteNothing() async throws {
        let cases: [(body: String, field: String?)] = [
            (#"{"valor": 1.2, "tipo": "d", "descricao": "devolve"}"#, "valor"),
            (#"{"valor": 1.0, "tipo": "d", "descricao": "devolve"}"#, "valor"),
            (#"{"valor": 1e2, "tipo": "d", "descricao": "devolve"}"#, "valor"),
            (#"{"valor": 0, "tipo": "c", "descricao": "zero"}"#, "valor"),
            (#"{"valor": -1, "tipo": "c", "descricao": "negativo"}"#, "valor"),
            (#"{"valor": "1", "tipo": "c", "descricao": "string"}"#, "valor"),
            (#"{"valor": true, "tipo": "c", "descricao": "bool"}"#, "valor"),
            (#"{"valor": null, "tipo": "c", "descricao": "null"}"#, "valor"),
            (#"{"tipo": "c", "descricao": "sem valor"}"#, "valor"),
            (#"{"valor": 9007199254740992, "tipo": "c", "descricao": "2^53"}"#, "valor"),
            (#"{"valor": 9223372036854775808, "tipo": "c", "descricao": "2^63"}"#, "valor"),
            (#"{"valor": 123456789012345678901234567890, "tipo": "c", "descricao": "huge"}"#, "valor"),
            (#"{"valor": 1, "tipo": "x", "descricao": "devolve"}"#, "tipo"),
            (#"{"valor": 1, "tipo": "C", "descricao": "maiuscula"}"#, "tipo"),
            (#"{"valor": 1, "tipo": "cd", "descricao": "dois"}"#, "tipo"),
            (#"{"valor": 1, "tipo": 1, "descricao": "numero"}"#, "tipo"),
            (#"{"valor": 1, "descricao": "sem tipo"}"#, "tipo"),
            (#"{"valor": 1, "tipo": "c", "descricao": "123456789 e mais 25 chars"}"#, "descricao"),
            (#"{"valor": 1, "tipo": "c", "descricao": "01234567890"}"#, "descricao"),
            (#"{"valor": 1, "tipo": "c", "descricao": ""}"#, "descricao"),
            (#"{"valor": 1, "tipo": "c", "descricao": null}"#, "descricao"),
            (#"{"valor": 1, "tipo": "c"}"#, "descricao"),
            (#"{"valor": 1, "tipo": "c", "descricao": 12345}"#, "descricao"),
            (#"{"valor": 1, "tipo": "c", "descricao": ["a"]}"#, "descricao"),
            (#"{"valor": 1, "tipo": "c", "descricao": "nul\u0000x"}"#, "descricao"),
            (#"{"valor": 1, "tipo": "c", "descricao": "quebra\nde"}"#, "descricao"),
            (#"{"valor": 1, "valor": 2, "tipo": "c", "descricao": "dup"}"#, "valor"),
            (#"[{"valor": 1, "tipo": "c", "descricao": "array"}]"#, nil),
            (#""texto""#, nil),
            ("42", nil),
            ("null", nil),
        ]
                try await TestServer.run { server in
            let client = server.client
            for (body, field) in cases {
                let response = try await client.transact("1", body)
                XCTAssertEqual(response.status, .unprocessableEntity, body)
                let json = try response.json
                XCTAssertNotNil(json["error"] as? String, body)
                XCTAssertEqual(json["field"] as? String, field, body)
            }
            XCTAssertEqual(try server.audit().map(\.transactionCount).reduce(0, +), 0)
        }
    }

    func testBodiesThatAreNotJSONAre400() async throws {
        let bodies = [
            "", "{", "{\"valor\": 1, \"tipo\": \"c\", \"descricao\": \"x\"", "valor=1&tipo=c", "{'valor': 1}",
            #"{"valor": NaN, "tipo": "c", "descricao": "x"}"#, #"{"valor": Infinity, "tipo": "c", "descricao": "x"}"#,
            #"{"valor": 01, "tipo": "c", "descricao": "x"}"#, #"{"valor": 1,, "tipo": "c"}"#,
            #"{"valor": 1, "tipo": "c", "descricao": "x"} trailing"#, #"{"valor": 1, "tipo": "c", "descricao": "\ud800"}"#,
            #"{"valor": 1, "tipo": "c", "descricao": "\x"}"#,
            String(repeating: "[", count: 100) + String(repeating: "]", count: 100),
            "{\"a\":" + String(repeating: "{\"a\":", count: 40) + "1" + String(repeating: "}", count: 41),
        ]
        try await TestServer.run { server in
            let client = server.client
            for body in bodies {
                let response = try await client.transact("1", body)
                XCTAssertEqual(response.status, .badRequest, body)
                XCTAssertTrue((try response.json["error"] as? String)?.hasPrefix("body is not valid JSON") ?? false, body)
            }
            // Invalid UTF-8 inside a string.
            let response = try await client.execute(
                .POST, "/clientes/1/transacoes", headers: ["content-type": "application/json"],
                body: Array(#"{"valor":1,"tipo":"c","descricao":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8))
            XCTAssertEqual(response.status, .badRequest)
        }
    }

    func testUnknownMembersAreIgnoredAndEscapesDecoded() async throws {
        try await TestServer.run { server in
            let client = server.client
            let response = try await client.transact(
                "3", #"{"extra": {"nested": [1, 2.5, null, true]}, "v\u0061lor": 5, "tipo": "c", "descricao": "\u00e7\ud83d\ude00"}"#)
            XCTAssertEqual(response.status, .ok, response.text)
            let statement = try await client.statement("3")
            let entries = try XCTUnwrap(try statement.json["ultimas_transacoes"] as? [[String: Any]])
            XCTAssertEqual(entries.first?["descricao"] as? String, "ç😀")
        }
    }

    func testUnknownAndMalformedClientIdsAre404() async throws {
        let valid = #"{"valor": 1, "tipo": "c", "descricao": "x"}"#
        try await TestServer.run { server in
            let client = server.client
            for id in ["6", "0", "-1", "abc", "1.0", "+1", "%201", "99999999999999999999", "1e3", "00000000000000000001x"] {
                let response = try await client.transact(id, valid)
                XCTAssertEqual(response.status, .notFound, id)
                XCTAssertEqual(try response.json["error"] as? String, "client not found", id)
                let statement = try await client.statement(id)
                XCTAssertEqual(statement.status, .notFound, id)
            }
        }
    }

    func testUnknownClientWithInvalidPayloadIs422() async throws {
        // The documented choice: the payload is checked first, without the database.
        try await TestServer.run { server in
            let client = server.client
            let response = try await client.transact("6", #"{"valor": 1.2, "tipo": "c", "descricao": "x"}"#)
            XCTAssertEqual(response.status, .unprocessableEntity)
        }
    }

    func testMediaTypeAndSizeLimits() async throws {
                try await TestServer.run { server in
            let client = server.client
            let valid = #"{"valor": 1, "tipo": "c", "descricao": "x"}"#
            let form = try await client.transact("1", valid, contentType: "application/x-www-form-urlencoded")
            XCTAssertEqual(form.status, .unsupportedMediaType)
            let charset = try await client.transact("1", valid, contentType: "application/json; charset=utf-8")
            XCTAssertEqual(charset.status, .ok)
            let twice = try await client.transact(
                "1", valid, headers: ["content-type": "text/plain"])
            XCTAssertEqual(twice.status, .unsupportedMediaType, "two Content-Type headers are ambiguous")
            let none = try await client.transact("1", valid, contentType: nil)
            XCTAssertEqual(none.status, .ok, "a missing Content-Type is accepted")
            let huge = #"{"valor": 1, "tipo": "c", "descricao": "x", "pad": ""# + String(repeating: "a", count: 5000) + #""}"#
            let tooLarge = try await client.transact("1", huge)
            XCTAssertEqual(tooLarge.status, .payloadTooLarge)
            XCTAssertNotNil(try tooLarge.json["error"] as? String)
            XCTAssertEqual(try server.audit()[0].transactionCount, 2)
        }
    }

    func testIdempotencyKeyHeader() async throws {
                try await TestServer.run { server in
            let client = server.client
            let body = #"{"valor": 300, "tipo": "d", "descricao": "retry"}"#
            let key: HTTPHeaders = ["Idempotency-Key": "order-42"]
            let first = try await client.transact("1", body, headers: key)
            XCTAssertEqual(first.status, .ok)
            XCTAssertNil(first.headers.first(name: "idempotent-replayed"))
            let again = try await client.transact("1", body, headers: key)
            XCTAssertEqual(again.status, .ok)
            XCTAssertEqual(again.text, first.text)
            XCTAssertEqual(again.headers.first(name: "idempotent-replayed"), "true")
            let different = try await client.transact("1", #"{"valor": 301, "tipo": "d", "descricao": "retry"}"#, headers: key)
            XCTAssertEqual(different.status, .unprocessableEntity)
            XCTAssertEqual(try different.json["field"] as? String, "Idempotency-Key")
            let malformed = try await client.transact("1", body, headers: ["Idempotency-Key": "has space"])
            XCTAssertEqual(malformed.status, .badRequest)
            XCTAssertEqual(try server.audit()[0].transactionCount, 1)
        }
    }

    func testUnknownPathsAndMethodsAnswerJSON() async throws {
        try await TestServer.run { server in
            let client = server.client
            let unknown = try await client.execute(.GET, "/clientes")
            XCTAssertEqual(unknown.status, .notFound)
            XCTAssertNotNil(try unknown.json["error"])
            XCTAssertEqual(unknown.headers.first(name: "x-instance"), "api-test", "errors carry x-instance too")
            let wrongMethod = try await client.execute(.DELETE, "/clientes/1/extrato")
            XCTAssertTrue([.notFound, .methodNotAllowed].contains(wrongMethod.status))
            XCTAssertNotNil(try wrongMethod.json["error"])
            let health = try await client.execute(.GET, "/health")
            XCTAssertEqual(health.status, .ok)
            XCTAssertEqual(try health.json["instance"] as? String, "api-test")
        }
    }
}

