import CrebitosApp
import CrebitosPostgres
import CrebitosTestSupport
import NIOHTTP1
import XCTest

/// The application built by `buildApplication` on a PostgreSQL URL: the same routes and
/// answers as on SQLite (the HTTP layer does not know the engine), and no WAL gauge.
final class PostgresApplicationTests: XCTestCase {
    func testTheApplicationServesTheLedgerFromPostgreSQL() async throws {
        let url = try PostgresURL(try await TemporaryPostgres.freshDatabaseURL())
        try await TestServer.run(configure: { $0.database = .postgres(url) }) { server in
            let client = server.client
            let health = try await client.execute(.GET, "/health")
            XCTAssertEqual(health.status, .ok, "answers only once the database is reachable and its schema ready")
            let credit = try await client.transact("1", #"{"valor": 10, "tipo": "c", "descricao": "toma"}"#)
            XCTAssertEqual(credit.status, .ok, credit.text)
            XCTAssertEqual(try credit.json["saldo"] as? Int, 10)
            let refused = try await client.transact("2", #"{"valor": 80001, "tipo": "d", "descricao": "demais"}"#)
            XCTAssertEqual(refused.status, .unprocessableEntity)
            let key: HTTPHeaders = ["Idempotency-Key": "k1"]
            let first = try await client.transact("1", #"{"valor": 3, "tipo": "d", "descricao": "devolve"}"#, headers: key)
            let replay = try await client.transact("1", #"{"valor": 3, "tipo": "d", "descricao": "devolve"}"#, headers: key)
            XCTAssertEqual(first.text, replay.text)
            XCTAssertEqual(replay.headers.first(name: "Idempotent-Replayed"), "true")
            let unknown = try await client.transact("6", #"{"valor": 1, "tipo": "c", "descricao": "x"}"#)
            XCTAssertEqual(unknown.status, .notFound)
            let statement = try await client.statement("1")
            XCTAssertEqual(statement.status, .ok)
            let saldo = try XCTUnwrap(try statement.json["saldo"] as? [String: Any])
            XCTAssertEqual(saldo["total"] as? Int, 7)
            let entries = try XCTUnwrap(try statement.json["ultimas_transacoes"] as? [[String: Any]])
            XCTAssertEqual(entries.map { $0["descricao"] as? String }, ["devolve", "toma"])
            let metrics = try await client.execute(.GET, "/metrics")
            XCTAssertEqual(metrics.status, .ok)
            XCTAssertFalse(metrics.text.contains("crebitos_wal_bytes"), "the WAL gauge is SQLite's")
        }
    }

    func testAnUnreachableServerStopsTheStart() async throws {
        // Nobody listens on port 1: buildApplication throws instead of serving without a database.
        var settings = ServerSettings(listen: .tcp(host: "127.0.0.1", port: 0), logLevel: .critical)
        settings.database = .postgres(try PostgresURL("postgres://nobody@127.0.0.1:1/none"))
        do {
            _ = try await buildApplication(settings, handleSignals: false)
            XCTFail("started without its database")
        } catch {}
    }
}
