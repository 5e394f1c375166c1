import CrebitosLedger
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The HTTP/1.1 server: a SwiftNIO listener whose connections each get NIO's request
/// decoder and an ``APIChannelHandler``. No framework sits between the socket and the
/// API: a statement is read and answered on the connection's event loop, and a write
/// goes to the store's writer thread and comes back once (docs/BENCHMARKS.md has the
/// comparison with Hummingbird that chose this).
///
/// As a `Service` it serves until the graceful shutdown, then, in this order: for
/// `drainPeriod` every answer carries `Connection: close` while it keeps accepting (nginx
/// stops reusing its connections to this instance), then it stops accepting, closes idle
/// connections, and waits for the requests in flight to be answered.
public final class HTTPServer<L: Ledger>: Service, Sendable {
    public struct Configuration: Sendable {
        public var address: ListenAddress
        public var timeouts: ConnectionTimeouts
        public var drainPeriod: Duration
        public var backlog: Int32
        /// Connections served at once; a connection beyond it is closed as it is accepted.
        public var maximumConnections: Int

        public init(
            address: ListenAddress, timeouts: ConnectionTimeouts = ConnectionTimeouts(),
            drainPeriod: Duration = .seconds(1), backlog: Int32 = 1024, maximumConnections: Int = 4096
        ) {
            self.address = address
            self.timeouts = timeouts
            self.drainPeriod = drainPeriod
            self.backlog = backlog
            self.maximumConnections = maximumConnections
        }
    }

    private let configuration: Configuration
    private let responder: APIResponder<L>
    private let group: any EventLoopGroup
    private let logger: Logger
    private let drain = ConnectionDrain()
    private let connections = Mutex<[ObjectIdentifier: any Channel]>([:])
    private let listening: EventLoopPromise<SocketAddress>

    /// Where the server listens, once it does (an ephemeral port resolved).
    public var listeningAddress: EventLoopFuture<SocketAddress> { listening.futureResult }

    public init(configuration: Configuration, responder: APIResponder<L>, group: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.responder = responder
        self.group = group
        self.logger = logger
        listening = group.next().makePromise(of: SocketAddress.self)
    }

    public func run() async throws {
        let listener: any Channel
        do {
            listener = try await bind()
        } catch {
            listening.fail(error)
            throw error
        }
        if case .unixSocket(let path) = configuration.address {
            // nginx's workers run as another user: let them connect to the socket.
            chmod(path, 0o666)
        }
        let bound = listener.localAddress!
        listening.succeed(bound)
        // The address as bound (the real port when 0 was asked for): tests read it here.
        switch configuration.address {
        case .tcp: logger.info("listening on \(bound.ipAddress ?? "?"):\(bound.port ?? 0)")
        case .unixSocket(let path): logger.info("listening on unix:\(path)")
        }

        // Returns when the graceful shutdown begins (or the task is cancelled).
        try? await gracefulShutdown()
        drain.start()
        logger.info("shutting down: closing connections after their next answer", metadata: ["drainFor": "\(configuration.drainPeriod)"])
        try? await Task.sleep(for: configuration.drainPeriod)
        try? await listener.close()
        for channel in connections.withLock({ Array($0.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(ShutdownEvent())
        }
        // Requests in flight are answered within the store's write deadline; the service
        // group's shutdown timeout bounds this wait in any case.
        while !connections.withLock({ $0.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(10))
            if Task.isCancelled { break }
        }
        for channel in connections.withLock({ Array($0.values) }) { try? await channel.close() }
        if case .unixSocket(let path) = configuration.address { unlink(path) }
    }

    private func bind() async throws -> any Channel {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: configuration.backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [self] channel in
                guard track(channel) else {
                    // Over the cap: closed before any byte is read (nginx tries the other
                    // instance); NIO closes a child channel whose initializer fails.
                    return channel.eventLoop.makeFailedFuture(ConnectionLimitReached())
                }
                return channel.eventLoop.makeCompletedFuture {
                    let arrival = RequestArrival()
                    // Backpressure: a client that sends requests and does not read the answers
                    // stops being read once the answers it has not read fill the socket's
                    // buffer (NIO's writability), instead of growing the instance's memory.
                    try channel.pipeline.syncOperations.addHandler(BackPressureHandler())
                    try channel.pipeline.syncOperations.addHandler(RequestArrivalHandler(arrival: arrival))
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
                    try channel.pipeline.syncOperations.addHandler(APIChannelHandler(
                        responder: responder, drain: drain, timeouts: configuration.timeouts,
                        responseHeaders: ResponseHeaders(instanceName: responder.instanceName), arrival: arrival))
                }
            }
        switch configuration.address {
        case .tcp(let host, let port):
            // TCP_NODELAY is a TCP-level option (IPPROTO_TCP): `.tcpOption`, never
            // `.socketOption`, which is SOL_SOCKET, where option 1 is SO_DEBUG. SO_DEBUG needs
            // CAP_NET_ADMIN: it succeeds as root on a host and fails in a container, and NIO
            // closes every accepted connection whose option fails. Only on TCP: a Unix socket
            // has no Nagle to turn off, and the option would fail there too.
            return try await bootstrap
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .bind(host: host, port: port).get()
        case .unixSocket(let path):
            // A socket file left by a killed process would make bind fail: remove it, but
            // only if it is a socket (never delete a regular file by mistake).
            var status = stat()
            if lstat(path, &status) == 0, (status.st_mode & S_IFMT) == S_IFSOCK { unlink(path) }
            return try await bootstrap.bind(unixDomainSocketPath: path).get()
        }
    }

    struct ConnectionLimitReached: Error {}

    /// Records an accepted connection until it closes; false (and not recorded) when the
    /// instance already serves ``Configuration/maximumConnections``.
    private func track(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let admitted = connections.withLock { connections in
            guard connections.count < configuration.maximumConnections else { return false }
            connections[id] = channel
            return true
        }
        guard admitted else { return false }
        channel.closeFuture.whenComplete { [self] _ in
            _ = connections.withLock { $0.removeValue(forKey: id) }
        }
        return true
    }
}
