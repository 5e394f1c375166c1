import AsyncHTTPClient
import CrebitosStore
import Foundation
import GRDB
import NIOCore
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A real server whose other instance froze while holding the database lock: this test
/// process takes the `flock` on `<db>.lock` itself and keeps it. Writes must be answered
/// 503 once their deadline passed, and none of them may be committed after the lock is
/// released (the late commit a client told "failed" would never know about).
final class WriteDeadlineProcessTests: XCTestCase {
    func testWritesBlockedByAFrozenLockHolderAre503AndNeverStored() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("crebitos-deadline-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let databasePath = directory.appendingPathComponent("rinha.db").path
        let server = try ServerProcess(
            name: "api01", databasePath: databasePath, listen: "127.0.0.1:0", directory: directory,
            environment: ["CREBITOS_WRITE_DEADLINE_MS": "300"])
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            try server.start()
            try await server.waitUntilReady(client: client)

            let lockDescriptor = open(CrossProcessLock.lockPath(forDatabase: databasePath), O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            XCTAssertGreaterThanOrEqual(lockDescriptor, 0)
            defer { close(lockDescriptor) }
            XCTAssertEqual(flock(lockDescriptor, LOCK_EX), 0)

            let blocked = (0..<8).map { "frozen\($0)" }
            let statuses = try await withThrowingTaskGroup(of: UInt.self) { group in
                for description in blocked {
                    group.addTask { try await Self.credit(description, to: server, client: client) }
                }
                var statuses: [UInt] = []
                for try await status in group { statuses.append(status) }
                return statuses
            }
            XCTAssertEqual(statuses, Array(repeating: 503, count: blocked.count), server.log)

            flock(lockDescriptor, LOCK_UN)
            let after = try await Self.credit("thawed", to: server, client: client)
            XCTAssertEqual(after, 200, server.log)
            server.terminate()
            XCTAssertEqual(server.process.terminationStatus, 0, server.log)

            let database = try DatabaseQueue(path: databasePath)
            defer { try? database.close() }
            let stored = try await database.read { try String.fetchAll($0, sql: "SELECT descricao FROM transacoes") }
            XCTAssertEqual(stored, ["thawed"], "none of the writes answered 503 was committed later")
        } catch {
            server.terminate()
            try await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    private static func credit(_ description: String, to server: ServerProcess, client: HTTPClient) async throws -> UInt {
        var request = HTTPClientRequest(url: server.baseURL + "/clientes/1/transacoes")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: #"{"valor": 1, "tipo": "c", "descricao": "\#(description)"}"#))
        let response = try await client.execute(request, timeout: .seconds(30))
        _ = try await response.body.collect(upTo: 4096)
        return response.status.code
    }
}
