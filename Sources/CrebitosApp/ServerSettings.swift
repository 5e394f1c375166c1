import CrebitosHTTP
#if PostgreSQL
import CrebitosPostgres
#endif
import CrebitosStore
import Logging
import NIOCore

/// Everything one server process needs to know. Built once, at the edge, by
/// ``resolve(flags:environment:)``: a value that does not parse stops the process at
/// start with a message naming the flag or variable, never a silent default.
public struct ServerSettings: Sendable {
    /// Where the ledger lives: a SQLite file, or a PostgreSQL database.
    public var database: DatabaseLocation
    /// Connections each instance keeps to PostgreSQL at most (unused with SQLite).
    // The PostgreSQL settings' defaults are Setting's (written out there, so that a binary
    // without the PostgreSQL store has them too; a test checks they are the store's own).
    public var postgresConnections: Int = Int(Setting.postgresConnections.defaultValue)!
    /// PostgreSQL only: how long a write waits for a client's row lock (`lock_timeout`).
    public var postgresLockTimeout: Duration = .milliseconds(Int64(Setting.postgresLockTimeoutMs.defaultValue)!)
    /// PostgreSQL only: requests one instance works on at once, answered or not; beyond
    /// it a request is refused at once, "not written" (queue full).
    public var postgresRequestsInFlight: Int = Int(Setting.postgresRequestsInFlight.defaultValue)!
    public var listen: ListenAddress
    public var durability: Durability
    /// Shown in the `x-instance` header and in logs (api01, api02).
    public var instanceName: String
    public var logLevel: Logger.Level
    /// nil: SQLite checkpoints the WAL inside commits (its default); otherwise a
    /// background service checkpoints at this interval (see WALCheckpointer).
    public var checkpointInterval: Duration?
    /// NIO event loop threads. One by default: an instance gets 0.55 CPU, and NIO's own
    /// guess reads the cgroup quota in a container (1 loop) but sees every core natively.
    public var eventLoops: Int
    /// How long, after SIGTERM, the server keeps serving with `Connection: close` on every
    /// answer before it stops accepting (see ConnectionDrain).
    public var drainPeriod: Duration
    /// How long a connection may take to send a request's body, and may stay idle.
    public var timeouts: ConnectionTimeouts
    /// Whether `GET /metrics` serves Prometheus metrics (and requests are counted).
    public var metricsEnabled: Bool
    /// How long a write may wait for its turn (the other instance holding the lock, a
    /// stalled disk) before it is answered 503 without being written.
    public var writeDeadline: Duration = .seconds(2)
    /// Connections one instance serves at once; beyond it a new one is closed at once.
    /// nginx keeps 64 idle ones per worker and opens more under bursts: 4096 is far above
    /// what the contest's load needs and far below what would exhaust the instance's memory.
    public var maximumConnections: Int = 4096

    public init(
        databasePath: String = Setting.database.defaultValue,
        listen: ListenAddress = .tcp(host: "127.0.0.1", port: 8080),
        durability: Durability = .full,
        instanceName: String = Setting.instance.defaultValue,
        logLevel: Logger.Level = .info,
        checkpointInterval: Duration? = nil,
        eventLoops: Int = 1,
        drainPeriod: Duration = .seconds(1),
        timeouts: ConnectionTimeouts = ConnectionTimeouts(),
        metricsEnabled: Bool = true
    ) {
        self.database = .sqlite(path: databasePath)
        self.listen = listen
        self.durability = durability
        self.instanceName = instanceName
        self.logLevel = logLevel
        self.checkpointInterval = checkpointInterval
        self.eventLoops = eventLoops
        self.drainPeriod = drainPeriod
        self.timeouts = timeouts
        self.metricsEnabled = metricsEnabled
    }

    /// The SQLite file's path, or the PostgreSQL URL without its password. Setting it
    /// chooses a SQLite file.
    public var databasePath: String {
        get {
            switch database {
            case .sqlite(let path): path
            #if PostgreSQL
            case .postgres(let url): url.description
            #endif
            }
        }
        set { database = .sqlite(path: newValue) }
    }

    #if PostgreSQL
    var postgresConfiguration: PostgresStoreConfiguration? {
        guard case .postgres(let url) = database else { return nil }
        var configuration = PostgresStoreConfiguration(url: url, maximumConnections: postgresConnections, writeDeadline: writeDeadline)
        configuration.lockTimeout = postgresLockTimeout
        configuration.maximumRequestsInFlight = postgresRequestsInFlight
        return configuration
    }
    #endif

    var storeConfiguration: StoreConfiguration {
        StoreConfiguration(
            path: databasePath,
            durability: durability,
            checkpoint: checkpointInterval.map { .background(interval: $0) } ?? .sqliteAutomatic,
            writeDeadline: writeDeadline)
    }

    /// The longest the graceful shutdown may take before the remaining work is cancelled:
    /// the drain, then the requests in flight (bounded by the store's write deadline).
    var shutdownTimeout: Duration { drainPeriod + .seconds(5) }
}

/// Where the ledger lives, decided once from `--database`: a `postgres://` or
/// `postgresql://` URL means PostgreSQL, anything else is a SQLite file's path.
public enum DatabaseLocation: Sendable, Hashable {
    case sqlite(path: String)
    #if PostgreSQL
    case postgres(PostgresURL)
    #endif

    /// Whether `text` names a PostgreSQL database rather than a file: decided the same way
    /// whether or not this binary has the PostgreSQL store, so that a binary without it
    /// refuses a URL instead of creating a SQLite file named "postgres:".
    static func looksLikePostgresURL(_ text: String) -> Bool {
        let lowered = text.lowercased()
        return lowered.hasPrefix("postgres://") || lowered.hasPrefix("postgresql://")
    }
}

/// One setting: its flag, its environment variable, its default and what it means. The
/// command's `--help` and the resolver read the same table, so the help shows the real
/// defaults.
public enum Setting: String, CaseIterable, Sendable {
    case database, listen, synchronous, instance, logLevel, eventLoops, checkpointMs, drainMs
    case requestTimeoutMs, idleTimeoutMs, metrics, writeDeadlineMs, postgresConnections
    case postgresLockTimeoutMs, postgresRequestsInFlight

    /// `--log-level` for `logLevel`.
    public var flag: String {
        "--" + rawValue.reduce(into: "") { text, character in
            if character.isUppercase { text += "-" + character.lowercased() } else { text.append(character) }
        }
    }

    /// `CREBITOS_LOG_LEVEL` for `logLevel`.
    public var environmentVariable: String {
        "CREBITOS_" + String(flag.dropFirst(2).uppercased().map { $0 == "-" ? "_" : $0 })
    }

    public var defaultValue: String {
        switch self {
        case .database: "data/rinha.db"
        case .listen: "127.0.0.1:8080"
        case .synchronous: "full"
        case .instance: "crebitos"
        case .logLevel: "info"
        case .eventLoops: "1"
        case .checkpointMs: "0"
        case .drainMs: "1000"
        case .requestTimeoutMs: "10000"
        case .idleTimeoutMs: "75000"
        case .metrics: "on"
        case .writeDeadlineMs: "2000"
        case .postgresConnections: "6"
        case .postgresLockTimeoutMs: "500"
        case .postgresRequestsInFlight: "1000"
        }
    }

    var meaning: String {
        switch self {
        case .database:
            "A SQLite database file, created with its schema and clients if missing (its directory too), or a PostgreSQL URL "
                + "postgres://user:password@host:port/database (schema and clients created if missing; ?sslmode= for TLS, as libpq)"
        case .listen: "host:port or unix:/path/to.sock"
        case .synchronous: "SQLite only (ignored with PostgreSQL, whose server decides): full (a 200 survives a power cut) or normal (it survives a process crash)"
        case .instance: "Name in the x-instance header and the logs"
        case .logLevel: "trace, debug, info, notice, warning, error or critical"
        case .eventLoops: "NIO event loop threads, 1 to 64"
        case .checkpointMs: "SQLite only (ignored with PostgreSQL): 0: SQLite checkpoints the WAL inside commits; N: a background task does it every N ms"
        case .drainMs: "After SIGTERM, keep serving this long with 'Connection: close' before closing"
        case .requestTimeoutMs: "A request's body must arrive within this many ms of its head (else 408)"
        case .idleTimeoutMs: "An idle connection is closed after this many ms (keep it above nginx's keepalive_timeout)"
        case .metrics: "on: GET /metrics serves Prometheus metrics; off: nothing is counted"
        case .writeDeadlineMs: "A write that waited this many ms for its turn is answered 503 and never written (keep it well below nginx's proxy_read_timeout); with PostgreSQL, the connections' statement_timeout"
        case .postgresConnections: "PostgreSQL only: connections each instance keeps to the server at most, 1 to 64"
        case .postgresLockTimeoutMs: "PostgreSQL only: a write waiting this many ms for a client's row lock (held by a frozen instance, a person in psql) is answered 503 and not written; the connections' lock_timeout, 1 to 60000"
        case .postgresRequestsInFlight: "PostgreSQL only: requests an instance works on at once, answered or not (a stalled server's abandoned ones included); beyond it a request is answered 503, not written, at once. 1 to 100000"
        }
    }

    /// The help line: what it means, its default and its variable.
    public var help: String {
        "\(meaning). Default: \(defaultValue). Env: \(environmentVariable)."
    }
}

/// A setting's value that does not parse.
public struct SettingsError: Error, CustomStringConvertible {
    public let description: String
}

extension ServerSettings {
    /// Reads every setting from `flags` (a flag wins), else from `environment`, else its
    /// default, and refuses a value that does not parse, naming where it came from.
    public static func resolve(
        flags: [Setting: String], environment: [String: String]
    ) throws(SettingsError) -> ServerSettings {
        func read<T>(_ setting: Setting, _ requirement: @autoclosure () -> String, _ parse: (String) -> T?) throws(SettingsError) -> T {
            let source: String
            let text: String
            if let flag = flags[setting] {
                (source, text) = ("\(setting.flag) '\(flag)'", flag)
            } else if let value = environment[setting.environmentVariable], !value.isEmpty {
                (source, text) = ("\(setting.environmentVariable)='\(value)'", value)
            } else {
                (source, text) = ("the default of \(setting.flag)", setting.defaultValue)
            }
            guard let value = parse(text) else { throw SettingsError(description: "\(source): \(requirement())") }
            return value
        }
        func whole(_ range: ClosedRange<Int>) -> (String) -> Int? {
            { text in Int(text).flatMap { range.contains($0) ? $0 : nil } }
        }

        let checkpointMs = try read(.checkpointMs, "must be 0 or a number of milliseconds up to 3600000", whole(0...3_600_000))
        let drainMs = try read(.drainMs, "must be a number of milliseconds from 0 to 60000", whole(0...60_000))
        let requestTimeoutMs = try read(.requestTimeoutMs, "must be a number of milliseconds from 10 to 600000", whole(10...600_000))
        let idleTimeoutMs = try read(.idleTimeoutMs, "must be a number of milliseconds from 10 to 3600000", whole(10...3_600_000))
        let writeDeadlineMs = try read(.writeDeadlineMs, "must be a number of milliseconds from 1 to 60000", whole(1...60_000))
        var urlProblem: String?
        let database = try read(
            .database,
            urlProblem.map { "is not a usable PostgreSQL URL: \($0)" } ?? "must be a file path or a postgres:// URL"
        ) { text -> DatabaseLocation? in
            guard !text.isEmpty else { return nil }
            guard DatabaseLocation.looksLikePostgresURL(text) else { return .sqlite(path: text) }
            #if PostgreSQL
            do throws(PostgresURL.ParseError) {
                return .postgres(try PostgresURL(text))
            } catch {
                urlProblem = error.description
                return nil
            }
            #else
            urlProblem = "this crebitos was built without the PostgreSQL store (the package trait PostgreSQL): "
                + "build it with 'swift build -c release --product crebitos' (the trait is on by default)"
            return nil
            #endif
        }
        var settings = ServerSettings(
            listen: try read(.listen, "must be host:port or unix:/path") { ListenAddress($0) },
            durability: try read(.synchronous, "must be full or normal") { Durability(rawValue: $0.lowercased()) },
            instanceName: try read(.instance, "must be 1 to 64 printable ASCII characters without spaces") { name in
                (1...64).contains(name.utf8.count) && name.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F } ? name : nil
            },
            logLevel: try read(.logLevel, "must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))") {
                Logger.Level(rawValue: $0.lowercased())
            },
            checkpointInterval: checkpointMs == 0 ? nil : .milliseconds(checkpointMs),
            eventLoops: try read(.eventLoops, "must be a whole number from 1 to 64", whole(1...64)),
            drainPeriod: .milliseconds(drainMs),
            timeouts: ConnectionTimeouts(
                requestBody: .milliseconds(Int64(requestTimeoutMs)), idle: .milliseconds(Int64(idleTimeoutMs))),
            metricsEnabled: try read(.metrics, "must be on or off") { ["on": true, "off": false][$0.lowercased()] })
        settings.writeDeadline = .milliseconds(writeDeadlineMs)
        settings.database = database
        settings.postgresConnections = try read(.postgresConnections, "must be a whole number from 1 to 64", whole(1...64))
        settings.postgresLockTimeout = .milliseconds(
            try read(.postgresLockTimeoutMs, "must be a number of milliseconds from 1 to 60000", whole(1...60_000)))
        settings.postgresRequestsInFlight = try read(.postgresRequestsInFlight, "must be a whole number from 1 to 100000", whole(1...100_000))
        return settings
    }
}
