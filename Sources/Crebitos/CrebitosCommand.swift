import ArgumentParser
import CMallocTuning
import CrebitosApp
import Foundation

/// `crebitos`: the API server (`crebitos serve`, the default). The benchmarks live in the
/// separate Benchmarks/ package: the server binary serves, it does not benchmark.
@main
struct CrebitosCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crebitos",
        abstract: "The crébitos debit-and-credit API (Rinha de Backend 2024/Q1) on a shared SQLite file or a PostgreSQL database.",
        subcommands: [ServeCommand.self],
        defaultSubcommand: ServeCommand.self)
}

/// `crebitos [serve]`: the API server. Every option can also come from an environment
/// variable (`CREBITOS_*`), which is how the compose file and the native stack configure
/// it; a flag given on the command line wins. Values are checked once, here, at start:
/// a bad one stops the process with a message naming it.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the API (the default when no subcommand is given).")

    @Option(help: ArgumentHelp(Setting.database.help)) var database: String?
    @Option(help: ArgumentHelp(Setting.listen.help)) var listen: String?
    @Option(help: ArgumentHelp(Setting.synchronous.help)) var synchronous: String?
    @Option(help: ArgumentHelp(Setting.instance.help)) var instance: String?
    @Option(help: ArgumentHelp(Setting.logLevel.help)) var logLevel: String?
    @Option(help: ArgumentHelp(Setting.eventLoops.help)) var eventLoops: String?
    @Option(help: ArgumentHelp(Setting.checkpointMs.help)) var checkpointMs: String?
    @Option(help: ArgumentHelp(Setting.drainMs.help)) var drainMs: String?
    @Option(help: ArgumentHelp(Setting.requestTimeoutMs.help)) var requestTimeoutMs: String?
    @Option(help: ArgumentHelp(Setting.idleTimeoutMs.help)) var idleTimeoutMs: String?
    @Option(help: ArgumentHelp(Setting.metrics.help)) var metrics: String?
    @Option(help: ArgumentHelp(Setting.writeDeadlineMs.help)) var writeDeadlineMs: String?
    @Option(help: ArgumentHelp(Setting.postgresConnections.help)) var postgresConnections: String?
    @Option(help: ArgumentHelp(Setting.postgresLockTimeoutMs.help)) var postgresLockTimeoutMs: String?
    @Option(help: ArgumentHelp(Setting.postgresRequestsInFlight.help)) var postgresRequestsInFlight: String?

    func run() async throws {
        let flags: [Setting: String?] = [
            .database: database, .listen: listen, .synchronous: synchronous, .instance: instance,
            .logLevel: logLevel, .eventLoops: eventLoops, .checkpointMs: checkpointMs, .drainMs: drainMs,
            .requestTimeoutMs: requestTimeoutMs, .idleTimeoutMs: idleTimeoutMs, .metrics: metrics,
            .writeDeadlineMs: writeDeadlineMs, .postgresConnections: postgresConnections,
            .postgresLockTimeoutMs: postgresLockTimeoutMs, .postgresRequestsInFlight: postgresRequestsInFlight,
        ]
        let settings: ServerSettings
        do {
            settings = try ServerSettings.resolve(
                flags: flags.compactMapValues { $0 }, environment: ProcessInfo.processInfo.environment)
        } catch {
            throw ValidationError(error.description)
        }
        keepFreedMemoryForReuse()
        // Stops on SIGTERM and SIGINT: drains, stops accepting, answers what is in flight.
        do {
            try await buildApplication(settings).run()
        } catch {
            // String(reflecting:): a driver's error (postgres-nio's PSQLError) describes itself
            // as a "generic description" and keeps what failed for its debug description.
            throw ServerFailure(description: String(reflecting: error))
        }
    }
}

/// Why the server stopped with an error, in words (ArgumentParser prints `Error: ` and this).
struct ServerFailure: Error, CustomStringConvertible {
    let description: String
}

/// glibc gives the top of a thread's heap back to the kernel (madvise) whenever more than
/// 128 KB of it is free, and the next request faults the pages in again: measured, about one
/// madvise and 0.9 page faults per request on a busy instance (docs/BENCHMARKS.md, "Where an
/// instance's CPU goes", 2026-12-03). Keeping up to 64 MB free per heap makes that 0.05 page
/// faults; the instance's resident memory stays far below its 250 MB limit either way.
private func keepFreedMemoryForReuse() {
    _ = crebitos_set_malloc_trim_threshold(64 << 20)
}
