#if PostgreSQL
import CrebitosPostgres
import Logging

// The PostgreSQL store's start-up, compiled only with the package trait `PostgreSQL` (on by
// default; the SQLite stack and image build without it: see Package.swift).

/// How long an instance waits, at start, for a PostgreSQL server that does not accept it yet.
/// A compose stack starts the instances beside the server: podman-compose ignores
/// `condition: service_healthy`, and even Docker's health check can pass on the init
/// server's Unix socket before TCP is up. Long enough for a first initdb, short enough that a
/// wrong URL or password is reported within a minute, not retried for ever.
let postgresStartupPatience: Duration = .seconds(60)

/// Opens the PostgreSQL ledger, retrying once a second for ``postgresStartupPatience`` while
/// the server refuses or is not there yet. Each failed try is logged with the endpoint and
/// the server's own words; the last failure is thrown, as ``DatabaseUnreachable``.
func openWaitingForServer(_ configuration: PostgresStoreConfiguration, logger: Logger) async throws -> PostgresLedger {
    let clock = ContinuousClock()
    let giveUpAt = clock.now + postgresStartupPatience
    var attempt = 0
    while true {
        attempt += 1
        do {
            let store = try await PostgresLedger.open(configuration, logger: logger)
            if attempt > 1 { logger.info("PostgreSQL reached", metadata: ["server": "\(configuration.url.description)", "attempt": "\(attempt)"]) }
            return store
        } catch {
            // String(reflecting:): postgres-nio's PSQLError prints "Generic description to
            // prevent accidental leakage of sensitive data" for String(describing:); its debug
            // description has the code, the server's message and the underlying socket error.
            let reason = String(reflecting: error)
            guard clock.now < giveUpAt else {
                throw DatabaseUnreachable(endpoint: configuration.url.description, attempts: attempt, reason: reason)
            }
            logger.warning("PostgreSQL not reachable yet, retrying in 1 s", metadata: [
                "server": "\(configuration.url.description)", "attempt": "\(attempt)", "reason": "\(reason)",
            ])
            try await Task.sleep(for: .seconds(1))
        }
    }
}

/// The start gave up on the database: says which server, how often it was tried, and why, in
/// the server's (or the socket's) own words rather than a driver's generic description.
public struct DatabaseUnreachable: Error, CustomStringConvertible {
    public let endpoint: String
    public let attempts: Int
    public let reason: String

    public var description: String {
        "cannot open the PostgreSQL database at \(endpoint) (\(attempts) tries over \(postgresStartupPatience)): \(reason)"
    }
}
#endif
