import ArgumentParser
import CrebitosApp
import CrebitosStore
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `crebitos`: the API server (`crebitos serve`, the default), and the write-path benchmark.
@main
struct CrebitosCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crebitos",
        abstract: "The crébitos debit-and-credit API (Rinha de Backend 2024/Q1) on a shared SQLite ledger.",
        subcommands: [ServeCommand.self, BenchWritesCommand.self],
        defaultSubcommand: ServeCommand.self)
}

/// `crebitos [serve]`: the API server. Every option can also come from an environment variable
/// (`CREBITOS_*`), which is how the compose file and the native stack configure it; a
/// flag given on the command line wins.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the API (the default when no subcommand is given).")

    @Option(help: "SQLite database file, created with its schema and clients if missing. Env: CREBITOS_DATABASE.")
    var database: String = environment("CREBITOS_DATABASE") ?? "data/rinha.db"

    @Option(help: "host:port or unix:/path/to.sock. Env: CREBITOS_LISTEN.")
    var listen: String = environment("CREBITOS_LISTEN") ?? "127.0.0.1:8080"

    @Option(help: "full (a 200 survives a power cut) or normal (survives a process crash). Env: CREBITOS_SYNCHRONOUS.")
    var synchronous: String = environment("CREBITOS_SYNCHRONOUS") ?? "full"

    @Option(help: "Name in the x-instance header and the logs. Env: CREBITOS_INSTANCE.")
    var instance: String = environment("CREBITOS_INSTANCE") ?? "crebitos"

    @Option(help: "0: SQLite checkpoints the WAL inside commits; N: a background task does it every N ms. Env: CREBITOS_CHECKPOINT_MS.")
    var checkpointMs: Int = environment("CREBITOS_CHECKPOINT_MS").flatMap { Int($0) } ?? 0

    @Option(help: "NIO event loop threads. Env: CREBITOS_EVENT_LOOPS.")
    var eventLoops: Int = environment("CREBITOS_EVENT_LOOPS").flatMap { Int($0) } ?? 1

    @Option(help: "After SIGTERM, serve this long with 'Connection: close' before closing. Env: CREBITOS_DRAIN_MS.")
    var drainMs: Int = environment("CREBITOS_DRAIN_MS").flatMap { Int($0) } ?? 1_000

    @Option(help: "A write that waited this long for its turn is answered 503 without being written. Env: CREBITOS_WRITE_DEADLINE_MS.")
    var writeDeadlineMs: Int = environment("CREBITOS_WRITE_DEADLINE_MS").flatMap { Int($0) } ?? 2_000

    @Option(help: "trace, debug, info, notice, warning, error or critical. Env: CREBITOS_LOG_LEVEL.")
    var logLevel: String = environment("CREBITOS_LOG_LEVEL") ?? "info"

    func run() async throws {
        guard let address = ListenAddress(listen) else {
            throw ValidationError("--listen must be host:port or unix:/path, got '\(listen)'")
        }
        guard let durability = Durability(rawValue: synchronous.lowercased()) else {
            throw ValidationError("--synchronous must be full or normal, got '\(synchronous)'")
        }
        guard let level = Logger.Level(rawValue: logLevel.lowercased()) else {
            throw ValidationError("--log-level must be one of \(Logger.Level.allCases.map(\.rawValue)), got '\(logLevel)'")
        }
        var settings = ServerSettings(
            databasePath: database, listen: address, durability: durability,
            instanceName: instance, logLevel: level, checkpointIntervalMilliseconds: max(0, checkpointMs), eventLoops: eventLoops, drainMilliseconds: drainMs)
        settings.writeDeadlineMilliseconds = writeDeadlineMs
        // Stops on SIGTERM and SIGINT: stops accepting, lets in-flight requests finish.
        try await runServer(settings)
    }
}

private func environment(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    let text = String(cString: value)
    return text.isEmpty ? nil : text
}
