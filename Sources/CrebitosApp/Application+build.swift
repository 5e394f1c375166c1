import CrebitosHTTP
import CrebitosLedger
import CrebitosStore
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The router of the whole API on a given ledger: the challenge's endpoints, `/health`,
/// and the middlewares that give every answer its JSON error shape and `x-instance`.
public func buildRouter<L: Ledger>(
    ledger: L, instanceName: String, drain: ConnectionDrain = ConnectionDrain()
) -> Router<BasicRequestContext> {
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: ConnectionDrainMiddleware(drain: drain))
    router.add(middleware: InstanceHeaderMiddleware(name: instanceName))
    router.add(middleware: ErrorMiddleware())
    LedgerController(ledger: ledger).addRoutes(to: router)
    HealthController(instanceName: instanceName).addRoutes(to: router)
    return router
}

/// Opens the database (creating it if needed) and builds the server application.
/// The server listens only once this returned, so `/health` answering means the
/// database is ready.
public func buildApplication(
    _ settings: ServerSettings, drain: ConnectionDrain = ConnectionDrain()
) throws -> some ApplicationProtocol {
    let logger = settings.logger

    let ledger = try SQLiteLedger.open(settings.storeConfiguration)
    let router = buildRouter(ledger: ledger, instanceName: settings.instanceName, drain: drain)

    let address: BindAddress
    switch settings.listen {
    case .tcp(let host, let port):
        address = .hostname(host, port: port)
    case .unixSocket(let path):
        // A socket file left by a killed process would make bind fail: remove it, but
        // only if it is a socket (never delete a regular file by mistake).
        var status = stat()
        if lstat(path, &status) == 0, (status.st_mode & S_IFMT) == S_IFSOCK {
            unlink(path)
        }
        address = .unixDomainSocket(path: path)
    }
    let listen = settings.listen
    let synchronous = try ledger.writerSynchronousMode()
    logger.info(
        "crebitos starting",
        metadata: [
            "listen": "\(listen)",
            "database": "\(settings.databasePath)",
            "synchronous": "\(settings.durability.rawValue) (PRAGMA synchronous=\(synchronous))",
            "logLevel": "\(settings.logLevel)",
            "eventLoops": "\(settings.eventLoops)",
            "checkpoint": "\(settings.checkpointIntervalMilliseconds > 0 ? "background every \(settings.checkpointIntervalMilliseconds) ms" : "sqlite automatic")",
        ])
    return Application(
        router: router,
        configuration: ApplicationConfiguration(address: address, serverName: nil, backlog: 1024),
        services: try ledger.backgroundServices(logger: logger),
        onServerRunning: { _ in
            // nginx's workers run as another user: let them connect to the socket.
            if case .unixSocket(let path) = listen { chmod(path, 0o666) }
        },
        eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup(numberOfThreads: settings.eventLoops)),
        logger: logger)
}

/// Builds the application and serves until SIGTERM or SIGINT. Then, in this order: for
/// `drainMilliseconds` every answer carries `Connection: close` while the server keeps
/// accepting (nginx stops reusing its connections to this instance), then the server
/// stops accepting, lets in-flight requests finish and returns.
public func runServer(_ settings: ServerSettings) async throws {
    let drain = ConnectionDrain()
    let app = try buildApplication(settings, drain: drain)
    // A service group shuts its services down in reverse order: the drain first, and the
    // server only once the drain period is over.
    let services = ServiceGroup(
        configuration: ServiceGroupConfiguration(
            services: [
                .init(service: app),
                .init(service: DrainService(drain: drain, period: .milliseconds(settings.drainMilliseconds), logger: settings.logger)),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: settings.logger))
    try await services.run()
    if case .unixSocket(let path) = settings.listen { unlink(path) }
    settings.logger.info("crebitos stopped")
}

extension ServerSettings {
    var logger: Logger {
        var logger = Logger(label: "crebitos")
        logger.logLevel = logLevel
        logger[metadataKey: "instance"] = "\(instanceName)"
        return logger
    }
}

/// Waits for the graceful shutdown, then drains connections for `period` and returns.
struct DrainService: Service {
    let drain: ConnectionDrain
    let period: Duration
    let logger: Logger

    func run() async throws {
        // Returns (or throws CancellationError) when the shutdown begins.
        try? await gracefulShutdown()
        drain.start()
        logger.info("shutting down: closing connections after their next answer", metadata: ["drainFor": "\(period)"])
        try? await Task.sleep(for: period)
    }
}
