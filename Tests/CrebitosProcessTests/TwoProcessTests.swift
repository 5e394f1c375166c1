import AsyncHTTPClient
import CrebitosLedger
import CrebitosStore
import CrebitosTestSupport
import Foundation
import GRDB
import Logging
import NIOCore
import PostgresNIO
import XCTest

/// Two real server processes on one database, as in production (without nginx): one
/// listens on TCP, the other on a Unix socket. Requests go to both at once. Once on one
/// SQLite file, once on one PostgreSQL database (of its own, on the test server).
final class TwoProcessTests: XCTestCase {
    /// The limits every new database starts with (CrebitosLedger's InitialClients, which the
    /// ledger tests hold to the spec's numbers).
    private static let limits = Dictionary(uniqueKeysWithValues: InitialClients.all.map { ($0.id, $0.limit) })

    private struct Answered: Sendable {
        let client: Int64
        let delta: Int64
        let description: String
        let balance: Int64
    }

    func testConcurrentWritesOnTwoProcessesKeepTheLedgerExact() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("crebitos-2p-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let databasePath = directory.appendingPathComponent("rinha.db").path
        let answered = try await runTwoProcesses(database: databasePath, directory: directory)
        // The file, read after both processes are gone.
        try Self.verifyLedger(at: databasePath, answered: answered)
    }

    func testConcurrentWritesOnTwoProcessesKeepTheLedgerExactOnPostgreSQL() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("crebitos-2p-pg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = try await TemporaryPostgres.freshDatabaseURL()
        let answered = try await runTwoProcesses(database: url, directory: directory)
        let stored = try await Self.storedOnPostgreSQL(url)
        try Self.verify(stored: stored.transactions, balances: stored.balances, answered: answered)
    }

    /// Starts two servers on `database` at the same moment (before either created the
    /// schema), sends both 600 writes, stops them; returns the writes answered 200.
    private func runTwoProcesses(database databasePath: String, directory: URL) async throws -> [Answered] {

        // Both start at the same moment on a file that does not exist yet.
        let servers = try ServerProcess.pair(databasePath: databasePath, directory: directory)
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            for server in servers { try server.start() }
            for server in servers { try await server.waitUntilReady(client: client) }

            let requestsPerServer = 600
            let results = try await withThrowingTaskGroup(of: (server: String, answered: Answered?).self) { group in
                var sent = 0
                var results: [(server: String, answered: Answered?)] = []
                // At most 64 requests in flight, spread over both processes.
                for index in 0..<(2 * requestsPerServer) {
                    if sent >= 64, let result = try await group.next() {
                        results.append(result)
                    }
                    sent += 1
                    let server = servers[index % 2]
                    group.addTask {
                        (server.name, try await Self.send(index: index, to: server, client: client))
                    }
                }
                for try await result in group { results.append(result) }
                return results
            }
            let answered = results.compactMap(\.answered)

            // Both 200s and limit refusals happened, on each of the two processes.
            XCTAssertGreaterThan(answered.count, 100)
            XCTAssertLessThan(answered.count, 2 * requestsPerServer)
            for server in servers {
                let its = results.filter { $0.server == server.name }
                XCTAssertEqual(its.count, requestsPerServer, "every request sent to \(server.name) was answered")
                XCTAssertGreaterThan(its.filter { $0.answered != nil }.count, 10, "\(server.name) applied transactions (200)")
                XCTAssertGreaterThan(its.filter { $0.answered == nil }.count, 10, "\(server.name) refused debits at the limit (422)")
            }
            for server in servers { XCTAssertTrue(server.process.isRunning, server.log) }
            for server in servers { server.terminate() }
            for server in servers {
                XCTAssertEqual(server.process.terminationStatus, 0, "clean exit on SIGTERM: \(server.log)")
            }
            try await client.shutdown()
            return answered
        } catch {
            for server in servers { server.terminate() }
            try await client.shutdown()
            throw error
        }
    }

    private static func storedOnPostgreSQL(_ url: String) async throws -> (transactions: [(Int64, Int64, String)], balances: [Int64: Int64]) {
        let components = try XCTUnwrap(URLComponents(string: url))
        let logger = Logger(label: "test")
        let connection = try await PostgresConnection.connect(
            configuration: .init(
                host: try XCTUnwrap(components.host), port: components.port ?? 5432, username: components.user ?? "postgres",
                password: components.password, database: String(components.path.dropFirst()), tls: .disable),
            id: 1, logger: logger)
        var transactions: [(Int64, Int64, String)] = []
        for try await (client, kind, amount, description) in try await connection.query(
            "SELECT cliente_id, tipo, valor, descricao FROM transacoes", logger: logger
        ).decode((Int64, String, Int64, String).self) {
            transactions.append((client, kind == "c" ? amount : -amount, description))
        }
        var balances: [Int64: Int64] = [:]
        for try await (id, balance) in try await connection.query("SELECT id, saldo FROM clientes", logger: logger).decode((Int64, Int64).self) {
            balances[id] = balance
        }
        try await connection.close()
        return (transactions, balances)
    }

    private static func verifyLedger(at databasePath: String, answered: [Answered]) throws {
        let database = try DatabaseQueue(path: databasePath)
        XCTAssertEqual(try database.read { try String.fetchOne($0, sql: "PRAGMA integrity_check") }, "ok")
        let stored = try database.read { db in
            try Row.fetchAll(db, sql: "SELECT cliente_id, tipo, valor, descricao FROM transacoes").map {
                ($0[0] as Int64, ($0[1] as String) == "c" ? $0[2] as Int64 : -($0[2] as Int64), $0[3] as String)
            }
        }
        var balances: [Int64: Int64] = [:]
        for id in limits.keys {
            balances[id] = try database.read { try Int64.fetchOne($0, sql: "SELECT saldo FROM clientes WHERE id = ?", arguments: [id]) }
        }
        try database.close()
        try verify(stored: stored, balances: balances, answered: answered)
    }

    private static func verify(stored: [(Int64, Int64, String)], balances: [Int64: Int64], answered: [Answered]) throws {
        XCTAssertEqual(stored.count, answered.count, "every 200 is stored, nothing else is")
        XCTAssertEqual(Set(stored.map(\.2)), Set(answered.map(\.description)), "stored rows are exactly the answered ones")
        XCTAssertEqual(Set(stored.map(\.2)).count, stored.count, "no transaction stored twice")
        for (id, limit) in limits {
            let balance = balances[id]
            let expected = answered.filter { $0.client == id }.map(\.delta).reduce(0, +)
            XCTAssertEqual(balance, expected, "client \(id): saldo equals the sum of answered transactions")
            XCTAssertGreaterThanOrEqual(balance ?? .min, -limit)
            XCTAssertTrue(answered.filter { $0.client == id }.allSatisfy { $0.balance >= -limit })
        }
    }

    /// Debits are twice as frequent as credits and large enough to hit the limits of
    /// the small clients, so both 200 and 422 happen.
    private static func send(index: Int, to server: ServerProcess, client: HTTPClient) async throws -> Answered? {
        let clientID = Int64(index % 5 + 1)
        let isCredit = index % 3 == 0
        let amount = Int64(index * 7919 % 20_000 + 1)
        let description = "p\(index)"
        var request = HTTPClientRequest(url: server.baseURL + "/clientes/\(clientID)/transacoes")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: #"{"valor":\#(amount),"tipo":"\#(isCredit ? "c" : "d")","descricao":"\#(description)"}"#))
        let response = try await client.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 4096)
        switch response.status {
        case .ok:
            let json = try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any]
            let balance = try XCTUnwrap((json?["saldo"] as? NSNumber)?.int64Value)
            XCTAssertEqual((json?["limite"] as? NSNumber)?.int64Value, limits[clientID])
            return Answered(client: clientID, delta: isCredit ? amount : -amount, description: description, balance: balance)
        case .unprocessableEntity:
            XCTAssertFalse(isCredit, "only debits can be refused here")
            return nil
        default:
            XCTFail("unexpected \(response.status) from \(server.name): \(String(buffer: body))")
            return nil
        }
    }
}
