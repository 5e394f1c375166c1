import CrebitosHTTP
import CrebitosLedger
#if PostgreSQL
import CrebitosPostgres
#endif
import CrebitosStore
import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle

/// One server process, assembled: the ledger, the HTTP server on it, the background
/// services they need, and the metrics registry. Tests build exactly this, with
/// ``buildApplication(_:handleSignals:)`` on a temporary database, and talk to it over
/// a real socket.
public final class Application: Sendable {
    public let settings: ServerSettings
    /// Where the server listens once it does (the real port when `listen` asked for 0).
    public let listeningAddress: EventLoopFuture<SocketAddress>
    private let serviceGroup: ServiceGroup
    private let eventLoopGroup: MultiThreadedEventLoopGroup
    private let closeLedger: @Sendable () async throws -> Void

    init(
        settings: ServerSettings, listeningAddress: EventLoopFuture<SocketAddress>, serviceGroup: ServiceGroup,
        eventLoopGroup: MultiThreadedEventLoopGroup, closeLedger: @escaping @Sendable () async throws -> Void
    ) {
        self.settings = settings
        self.listeningAddress = listeningAddress
        self.serviceGroup = serviceGroup
        self.eventLoopGroup = eventLoopGroup
        self.closeLedger = closeLedger
    }

    /// Serves until the graceful shutdown (SIGTERM or SIGINT when signals are handled,
    /// or ``shutDown()``), then stops the server, the background services and the ledger.
    public func run() async throws {
        var failure: (any Error)?
        do {
            try await serviceGroup.run()
        } catch {
            failure = error
        }
        try? await closeLedger()
        try? await eventLoopGroup.shutdownGracefully()
        settings.logger.info("crebitos stopped")
        if let failure { throw failure }
    }

    /// Starts the graceful shutdown; ``run()`` returns once it is done.
    public func shutDown() async {
        await serviceGroup.triggerGracefulShutdown()
    }
}

/// Opens the database (a SQLite file, created with its directory if needed, or a
/// PostgreSQL database, whose schema is created if missing) and assembles the server.
/// It listens only once ``Application/run()`` runs, so `/health` answering means the
/// database was reachable and its schema ready.
public func buildApplication(_ settings: ServerSettings, handleSignals: Bool = true) async throws -> Application {
    let logger = settings.logger
    let registry = PrometheusCollectorRegistry()
    let factory = PrometheusMetricsFactory(registry: registry).withCrebitosBuckets()
    let eventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: settings.eventLoops)
    var metrics: ServerMetrics?
    /// The HTTP server on the ledger, built with the concrete ledger type so that the
    /// request path is specialised for it.
    func makeServer<L: Ledger>(_ ledger: L) -> (service: any Service, listeningAddress: EventLoopFuture<SocketAddress>) {
        let responder = APIResponder(ledger: ledger, instanceName: settings.instanceName, metrics: metrics, logger: logger)
        let server = HTTPServer(
            configuration: .init(
                address: settings.listen, timeouts: settings.timeouts, drainPeriod: settings.drainPeriod,
                maximumConnections: settings.maximumConnections),
            responder: responder, group: eventLoopGroup, logger: logger)
        return (server, server.listeningAddress)
    }
    let server: (service: any Service, listeningAddress: EventLoopFuture<SocketAddress>)
    let backgroundServices: [any Service]
    let closeLedger: @Sendable () async throws -> Void
    /// What /metrics reads when scraped, besides the registry (SQLite's WAL size).
    var beforeScrape: @Sendable () -> Void = {}
    func makeMetrics() {
        guard settings.metricsEnabled else { return }
        metrics = ServerMetrics(factory: factory) { [beforeScrape] in
            beforeScrape()
            return registry.emitToBuffer()
        }
    }
    var engineMetadata: Logger.Metadata
    #if PostgreSQL
    let postgresConfiguration = settings.postgresConfiguration
    #else
    let postgresConfiguration: Never? = nil  // settings refused a PostgreSQL URL already
    #endif
    if let postgres = postgresConfiguration {
        #if PostgreSQL
        let store = try await openWaitingForServer(postgres, logger: logger)
        makeMetrics()
        server = makeServer(store)
        backgroundServices = store.backgroundServices(logger: logger)
        closeLedger = { await store.close() }
        engineMetadata = [
            "database": "\(postgres.url)",
            "connections": "\(postgres.maximumConnections)",
        ]
        #else
        switch postgres {}  // a Never: without the trait, this branch does not exist
        #endif
    } else {
        try FileManager.default.createDirectory(
            atPath: (settings.databasePath as NSString).deletingLastPathComponent.isEmpty
                ? "." : (settings.databasePath as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true)
        var storeConfiguration = settings.storeConfiguration
        if settings.metricsEnabled { storeConfiguration.metricsFactory = factory }
        let store = try SQLiteLedger.open(storeConfiguration)
        let synchronous = try store.writerSynchronousMode()
        backgroundServices = try store.backgroundServices(logger: logger)
        closeLedger = { try store.close() }
        if settings.metricsEnabled {
            let walBytes = Gauge(label: "crebitos_wal_bytes", factory: factory)
            beforeScrape = { walBytes.record(store.walFileSize()) }  // read when scraped, not on every commit
        }
        makeMetrics()
        server = makeServer(store)
        engineMetadata = [
            "database": "\(settings.databasePath)",
            "synchronous": "\(settings.durability.rawValue) (PRAGMA synchronous=\(synchronous))",
            "checkpoint": "\(settings.checkpointInterval.map { "background every \($0)" } ?? "sqlite automatic")",
        ]
    }

    engineMetadata["listen"] = "\(settings.listen)"
    engineMetadata["eventLoops"] = "\(settings.eventLoops)"
    engineMetadata["metrics"] = "\(settings.metricsEnabled ? "on" : "off")"
    logger.info("crebitos starting", metadata: engineMetadata)
    // A service group shuts its services down in reverse order: the server first (drain,
    // stop accepting, answer what is in flight), then the ledger's background services.
    let services: [any Service] = backgroundServices + [server.service]
    var configuration = ServiceGroupConfiguration(
        services: services.map { .init(service: $0) },
        gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [],
        logger: logger)
    configuration.maximumGracefulShutdownDuration = settings.shutdownTimeout
    return Application(
        settings: settings, listeningAddress: server.listeningAddress, serviceGroup: ServiceGroup(configuration: configuration),
        eventLoopGroup: eventLoopGroup, closeLedger: closeLedger)
}

extension ServerSettings {
    var logger: Logger {
        var logger = Logger(label: "crebitos")
        logger.logLevel = logLevel
        logger[metadataKey: "instance"] = "\(instanceName)"
        return logger
    }
}

extension PrometheusMetricsFactory {
    /// Latency buckets around what this server does (a fraction of a millisecond for a
    /// statement, about one for a durable write, up to the SLA's 250 ms and beyond), and
    /// batch sizes and queue depths up to the group commit's limit of 128.
    func withCrebitosBuckets() -> PrometheusMetricsFactory {
        var factory = self
        factory.defaultValueHistogramBuckets = [1, 2, 4, 8, 16, 32, 64, 128]
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .seconds(1), .seconds(2.5),
        ]
        return factory
    }
}
