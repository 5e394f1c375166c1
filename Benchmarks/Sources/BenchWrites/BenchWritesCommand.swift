import ArgumentParser
import CrebitosStore
import Foundation

/// `bench-writes`: one process's share of the write-path benchmark
/// (scripts/loadtest writes starts two at once on one file and merges their output).
@main
struct BenchWritesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-writes",
        abstract: "Measure commit latency of the write path alone, from this process.")

    @Option(help: "SQLite database file.")
    var database: String

    @Option(help: "group-commit (the server's write path) or busy-timeout (the baseline).")
    var strategy: String = "group-commit"

    @Option(help: "full or normal.")
    var synchronous: String = "full"

    @Option(help: "Poisson arrivals per second; 0 means a closed loop of --concurrency writers.")
    var rate: Double = 200

    @Option(help: "Writers in the closed loop (with --rate 0).")
    var concurrency: Int = 16

    @Option(help: "0: SQLite's automatic checkpoint; N: the background checkpointer every N ms.")
    var checkpointMs: Int = 0

    @Option(help: "Number of writes.")
    var writes: Int = 5000

    func run() async throws {
        guard let strategy = WriteBenchmark.Strategy(rawValue: strategy),
              let durability = Durability(rawValue: synchronous)
        else { throw ValidationError("unknown --strategy or --synchronous") }
        let load: WriteBenchmark.Load = rate > 0 ? .poisson(perSecond: rate) : .closedLoop(concurrency: concurrency)
        let started = Date()
        let latencies = try await WriteBenchmark.run(
            strategy: strategy, databasePath: database, durability: durability, load: load, writes: writes,
            checkpointIntervalMilliseconds: checkpointMs)
        let elapsed = Date().timeIntervalSince(started)
        // One JSON line: the latencies in ms and the wall time, merged by the script.
        let output: [String: Any] = ["elapsed_s": elapsed, "latencies_ms": latencies]
        let data = try JSONSerialization.data(withJSONObject: output)
        print(String(decoding: data, as: UTF8.self))
    }
}
