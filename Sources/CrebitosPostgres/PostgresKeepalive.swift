import Logging
import PostgresNIO
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// TCP keepalive on the pool's connections, so that a connection to a server whose host
/// vanished (no RST: powered off, partitioned) is found dead and closed by the kernel in
/// about 25 s, and the pool replaces it, instead of waiting for the kernel's retransmission
/// timeout (about 15 minutes).
///
/// postgres-nio (1.33) offers no socket options: neither `PostgresClient.Configuration` nor
/// `PostgresConnection.Configuration` has them, its `ClientBootstrap` is built inside
/// `PostgresConnection.connect` and not reachable, and the pool's connection factory only
/// takes host and port (a channel of our own, `Configuration(establishedChannel:)`, works
/// for a single connection, not for the pool). What a pooled `PostgresConnection` keeps is
/// its NIO channel, in an internal stored property: this reads it through `Mirror` the
/// first time a connection is leased, and sets the options on it. If a later postgres-nio
/// renames that property, nothing is set and a warning says so once; the store still
/// answers every request within twice its deadline, as without keepalive.
///
/// - `SO_KEEPALIVE` with `TCP_KEEPIDLE` 10 s, `TCP_KEEPINTVL` 5 s, `TCP_KEEPCNT` 3: an idle
///   connection's dead peer is noticed in about 25 s (the server side gets the same through
///   `tcp_keepalives_*`).
/// - `TCP_USER_TIMEOUT` 25 s: keepalive probes only run on a connection with nothing
///   unacknowledged; the pool's own keep-alive query, or any query, sent into a vanished
///   host would otherwise be retransmitted for 15 minutes. This bounds that too.
final class PostgresKeepalive: Sendable {
    static let idleSeconds = 10
    static let intervalSeconds = 5
    static let probes = 3
    static var userTimeoutMilliseconds: Int { (idleSeconds + intervalSeconds * probes) * 1_000 }

    private let configured = Mutex<Set<Int>>([])
    private let warned = Atomic<Bool>(false)
    private let logger: Logger
    private let enabled: Bool

    /// `enabled`: false for a Unix-socket endpoint, where there is no TCP.
    init(enabled: Bool, logger: Logger) {
        self.enabled = enabled
        self.logger = logger
    }

    /// Sets the options on `connection`'s socket the first time it is seen (each pooled
    /// connection has its own id); a no-op afterwards. Does not wait: the options are set on
    /// the channel's event loop before anything the caller sends next is written.
    func applyOnce(to connection: PostgresConnection) {
        guard enabled else { return }
        let first = configured.withLock { $0.insert(connection.id).inserted }
        guard first else { return }
        let id = connection.id
        connection.closeFuture.whenComplete { _ in _ = self.configured.withLock { $0.remove(id) } }
        guard let channel = Self.channel(of: connection) else {
            if !warned.exchange(true, ordering: .relaxed) {
                logger.warning("TCP keepalive not set on the PostgreSQL connections: postgres-nio's connection has no channel property any more")
            }
            return
        }
        Self.set(on: channel).whenFailure { [logger] error in
            logger.warning("TCP keepalive not set on a PostgreSQL connection", metadata: ["error": "\(error)"])
        }
    }

    static func channel(of connection: PostgresConnection) -> (any Channel)? {
        Mirror(reflecting: connection).children.first { $0.label == "channel" }?.value as? any Channel
    }

    private static func tcp(_ name: CInt) -> ChannelOptions.Types.SocketOption {
        ChannelOptions.Types.SocketOption(level: .tcp, name: NIOBSDSocket.Option(rawValue: name))
    }

    static func set(on channel: any Channel) -> EventLoopFuture<Void> {
        channel.setOption(ChannelOptions.socketOption(.so_keepalive), value: 1)
            .flatMap { channel.setOption(tcp(TCP_KEEPIDLE), value: idleSeconds) }
            .flatMap { channel.setOption(tcp(TCP_KEEPINTVL), value: intervalSeconds) }
            .flatMap { channel.setOption(tcp(TCP_KEEPCNT), value: probes) }
            .flatMap { channel.setOption(tcp(CInt(TCP_USER_TIMEOUT)), value: userTimeoutMilliseconds) }
    }

    /// The options as the socket has them now (for tests): SO_KEEPALIVE, TCP_KEEPIDLE,
    /// TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT.
    static func current(on channel: any Channel) async throws -> [Int] {
        var values: [Int] = []
        values.append(try await channel.getOption(ChannelOptions.socketOption(.so_keepalive)).get())
        for name in [TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, CInt(TCP_USER_TIMEOUT)] {
            values.append(try await channel.getOption(tcp(name)).get())
        }
        return values
    }
}
