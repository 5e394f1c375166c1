import CrebitosStore
import Logging

/// Everything one server process needs to know, from flags or environment variables.
public struct ServerSettings: Sendable {
    public var databasePath: String
    public var listen: ListenAddress
    public var durability: Durability
    /// Shown in the `x-instance` header and in logs (api01, api02).
    public var instanceName: String
    public var logLevel: Logger.Level
    /// 0: SQLite checkpoints the WAL inside commits (its default). N > 0: a background
    /// service checkpoints every N ms instead (see WALCheckpointer).
    public var checkpointIntervalMilliseconds: Int
    /// NIO event loop threads. One by default: an instance gets 0.6 CPU, and NIO's own
    /// guess reads the cgroup quota in a container (1 loop) but sees every core natively.
    public var eventLoops: Int
    /// How long, after SIGTERM, the server keeps serving with `Connection: close` on every
    /// answer before it stops accepting (see ConnectionDrain).
    public var drainMilliseconds: Int
    /// How long a write may wait for its turn before it is answered 503 without being
    /// written (StoreConfiguration.writeDeadline).
    public var writeDeadlineMilliseconds: Int = 2_000

    public init(
        databasePath: String = "data/rinha.db",
        listen: ListenAddress = .tcp(host: "127.0.0.1", port: 8080),
        durability: Durability = .full,
        instanceName: String = "crebitos",
        logLevel: Logger.Level = .info,
        checkpointIntervalMilliseconds: Int = 0,
        eventLoops: Int = 1,
        drainMilliseconds: Int = 1_000
    ) {
        self.databasePath = databasePath
        self.listen = listen
        self.durability = durability
        self.instanceName = instanceName
        self.logLevel = logLevel
        self.checkpointIntervalMilliseconds = checkpointIntervalMilliseconds
        self.eventLoops = max(1, eventLoops)
        self.drainMilliseconds = max(0, drainMilliseconds)
    }

    var storeConfiguration: StoreConfiguration {
        StoreConfiguration(
            path: databasePath,
            durability: durability,
            checkpoint: checkpointIntervalMilliseconds > 0
                ? .background(interval: .milliseconds(checkpointIntervalMilliseconds)) : .sqliteAutomatic,
            writeDeadline: .milliseconds(max(1, writeDeadlineMilliseconds)))
    }
}

/// Where the server accepts connections.
public enum ListenAddress: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unixSocket(path: String)

    /// `host:port` (`[::1]:8080` for IPv6) or `unix:/path/to.sock`.
    public init?(_ text: String) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst("unix:".count))
            guard !path.isEmpty else { return nil }
            self = .unixSocket(path: path)
            return
        }
        guard let colon = text.lastIndex(of: ":"),
              let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self = .tcp(host: host, port: port)
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unixSocket(let path): "unix:\(path)"
        }
    }
}
