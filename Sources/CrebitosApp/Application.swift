import CrebitosHTTP
import CrebitosLedger
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
    private let closeLedger: @Sendable () throws -> Void

    init(
        settings: ServerSettings, listeningAddress: EventLoopFuture<SocketAddress>, serviceGroup: ServiceGroup,
        eventLoopGroup: MultiThreadedEventLoopGroup, closeLedger: @escaping @Sendable () throws -> Void
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
        try? closeLedger()
        try? await eventLoopGroup.shutdownGracefully()
        settings.logger.info("crebitos stopped")
        if let failure { throw failure }
    }

    /// Starts the graceful shutdown; ``run()`` returns once it is done.
    public func shutDown() async {
        await serviceGroup.triggerGracefulShutdown()
    }
}

/// Opens the database (creating it and its directory if needed) and assembles the server.
/// It listens only once ``Application/run()`` runs, so `/health` answering means the
/// database is ready.
public func buildApplication(_ settings: ServerSettings, handleSignals: Bool = true) throws -> Application {
    let logger = settings.logger
    try FileManager.default.createDirectory(
        atPath: (settings.databasePath as NSString).deletingLastPathComponent.isEmpty
            ? "." : (settings.databasePath as NSString).deletingLastPathComponent,
        withIntermediateDirectories: true)
    let registry = PrometheusCollectorRegistry()
    let factory = PrometheusMetricsFactory(registry: registry).withCrebitosBuckets()
    var storeConfiguration = settings.storeConfiguration
    if settings.metricsEnabled { storeConfiguration.metricsFactory = factory }
    let ledger = try SQLiteLedger.open(storeConfiguration)
    let synchronous = try ledger.writerSynchronousMode()

    let metrics: ServerMetrics?
    if settings.metricsEnabled {
        let walBytes = Gauge(label: "crebitos_wal_bytes", factory: factory)
        metrics = ServerMetrics(factory: factory) {
            walBytes.record(ledger.walFileSize())  // read when scraped, not on every commit
            return registry.emitToBuffer()
        }
    } else {
        metrics = nil
    }
    let responder = APIResponder(ledger: ledger, instanceName: settings.instanceName, metrics: metrics, logger: logger)
    let eventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: settings.eventLoops)
    let server = HTTPServer(
        configuration: .init(address: settings.listen, timeouts: settings.timeouts, drainPeriod: settings.drainPeriod),
        responder: responder, group: eventLoopGroup, logger: logger)

    logger.info(
        "crebitos starting",
        metadata: [
            "listen": "\(settings.listen)",
            "database": "\(settings.databasePath)",
            "synchronous": "\(settings.durability.rawValue) (PRAGMA synchronous=\(synchronous))",
            "eventLoops": "\(settings.eventLoops)",
            "checkpoint": "\(settings.checkpointInterval.map { "background every \($0)" } ?? "sqlite automatic")",
            "metrics": "\(settings.metricsEnabled ? "on" : "off")",
        ])
    // A service group shuts its services down in reverse order: the server first (drain,
    // stop accepting, answer what is in flight), then the ledger's background services.
    let services: [any Service] = try ledger.backgroundServices(logger: logger) + [server]
    var configuration = ServiceGroupConfiguration(
        services: services.map { .init(service: $0) },
        gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [],
        logger: logger)
    configuration.maximumGracefulShutdownDuration = settings.shutdownTimeout
    return Application(
        settings: settings, listeningAddress: server.listeningAddress, serviceGroup: ServiceGroup(configuration: configuration),
        eventLoopGroup: eventLoopGroup, closeLedger: { try ledger.close() })
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
