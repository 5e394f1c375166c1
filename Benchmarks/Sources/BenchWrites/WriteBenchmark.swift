import CrebitosLedger
import CrebitosStore
import Dispatch
import Foundation
import GRDB
import Logging
import ServiceLifecycle

/// Measures the write path alone (no HTTP) from one process, so that several processes
/// on one file can be compared: the store's group commit under the cross-process lock,
/// against the plain approach it replaces (an IMMEDIATE transaction per write, with
/// SQLite's default busy handler as GRDB's `busyMode = .timeout` installs it).
/// `scripts/loadtest writes` runs it in two processes at once; docs/ARCHITECTURE.md has results.
enum WriteBenchmark {
    enum Strategy: String, CaseIterable, Sendable {
        /// SQLiteLedger as the server runs it.
        case groupCommit = "group-commit"
        /// One `BEGIN IMMEDIATE` per write, GRDB `busyMode = .timeout(5)`, no lock file.
        case busyTimeout = "busy-timeout"
    }

    /// How writes arrive: at a Poisson rate (the contest's open model), or as fast as
    /// `concurrency` writers in a loop can go.
    enum Load: Sendable {
        case poisson(perSecond: Double)
        case closedLoop(concurrency: Int)
    }

    /// Latency of each write in milliseconds, from submission to commit.
    static func run(
        strategy: Strategy, databasePath: String, durability: Durability, load: Load, writes: Int,
        checkpointIntervalMilliseconds: Int = 0
    ) async throws -> [Double] {
        let write: @Sendable (Int) async throws -> Void
        var closeDatabase: () throws -> Void
        switch strategy {
        case .groupCommit:
            let ledger = try SQLiteLedger.open(StoreConfiguration(
                path: databasePath, durability: durability,
                checkpoint: checkpointIntervalMilliseconds > 0
                    ? .background(interval: .milliseconds(checkpointIntervalMilliseconds)) : .sqliteAutomatic))
            let services = try ledger.backgroundServices(logger: Logger(label: "bench"))
            let checkpointer = Task {
                try await withThrowingDiscardingTaskGroup { group in
                    for service in services { group.addTask { try await service.run() } }
                }
            }
            write = { index in
                _ = try await ledger.apply(
                    TransactionRequest(amount: 1, kind: index.isMultiple(of: 2) ? .credit : .debit, description: "bench"),
                    toClient: Int64(index % 5 + 1))
            }
            closeDatabase = {
                checkpointer.cancel()
                try ledger.close()
            }
        case .busyTimeout:
            // Create the schema first (under the lock), then write without it.
            try SQLiteLedger.open(StoreConfiguration(path: databasePath, durability: durability)).close()
            var configuration = Configuration()
            configuration.busyMode = .timeout(5)
            let pool = try DatabasePool(path: databasePath, configuration: configuration)
            // SQLite takes the level's name in any case: `full`, `normal`.
            try await pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = \(durability.rawValue)") }
            write = { index in
                try await pool.writeWithoutTransaction { db in
                    try db.inTransaction(.immediate) {
                        try plainWrite(clientID: Int64(index % 5 + 1), credit: index.isMultiple(of: 2), in: db)
                        return .commit
                    }
                }
            }
            closeDatabase = { try pool.close() }
        }
        defer { try? closeDatabase() }

        switch load {
        case .poisson(let rate):
            return try await withThrowingTaskGroup(of: Double.self) { group in
                var generator = SystemRandomNumberGenerator()
                for index in 0..<writes {
                    // Exponential gaps between arrivals.
                    let gap = -log(Double.random(in: Double.ulpOfOne..<1, using: &generator)) / rate
                    try await Task.sleep(for: .microseconds(Int(gap * 1_000_000)))
                    group.addTask { try await timed { try await write(index) } }
                }
                var latencies: [Double] = []
                for try await latency in group { latencies.append(latency) }
                return latencies
            }
        case .closedLoop(let concurrency):
            return try await withThrowingTaskGroup(of: [Double].self) { group in
                for worker in 0..<concurrency {
                    group.addTask {
                        var latencies: [Double] = []
                        var index = worker
                        while index < writes {
                            latencies.append(try await timed { try await write(index) })
                            index += concurrency
                        }
                        return latencies
                    }
                }
                var latencies: [Double] = []
                for try await part in group { latencies += part }
                return latencies
            }
        }
    }

    /// The baseline's write: the same two statements as the store's write of a
    /// transaction (balance update with the limit read back, then the row), without
    /// the idempotency and limit logic, which cost the same in both strategies.
    private static func plainWrite(clientID: Int64, credit: Bool, in db: Database) throws {
        _ = try Row.fetchOne(
            db.cachedStatement(sql: "UPDATE clientes SET saldo = saldo + ? WHERE id = ? RETURNING limite, saldo"),
            arguments: [credit ? 1 : -1, clientID])
        let nowMicroseconds = Int64(Date().timeIntervalSince1970 * 1_000_000)
        try db.cachedStatement(sql: """
            INSERT INTO transacoes (cliente_id, valor, tipo, descricao, realizada_em) VALUES (?, 1, ?, 'bench', ?)
            """).execute(arguments: [clientID, credit ? "c" : "d", nowMicroseconds])
    }

    private static func timed(_ body: () async throws -> Void) async throws -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try await body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1_000_000
    }
}
