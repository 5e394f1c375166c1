import CrebitosLedger

/// How to reach the ledger's PostgreSQL database and how to use it.
public struct PostgresStoreConfiguration: Sendable {
    public var url: PostgresURL
    /// Connections this process keeps to the server at most. A write holds one for one
    /// round trip (one `CALL` of the write procedure, which commits), a statement read for
    /// one query, so a handful serves an instance with 0.6 CPU; more only adds backends on
    /// the server.
    public var maximumConnections: Int
    /// `statement_timeout` of every connection: a statement still running after this long
    /// (a stalled disk, a lock wait past ``lockTimeout``'s reach) is cancelled by the server
    /// and rolled back, so the write is answered "not written" in bounded time, like the
    /// SQLite store's write deadline. Every request is answered within twice this, even
    /// when the server does not answer at all.
    public var writeDeadline: Duration
    /// `lock_timeout` of the pool's connections: a write that waited this long for a
    /// client's row lock (held by a frozen instance's open transaction, a person in psql)
    /// gives up and is answered "not written", long before ``writeDeadline``. Row locks
    /// are held for one short transaction (a WAL flush), so a few hundred ms is far above
    /// a normal wait.
    public var lockTimeout: Duration = PostgresStoreConfiguration.defaultLockTimeout
    public static let defaultLockTimeout = Duration.milliseconds(500)
    /// Requests this process works on at once, answered or not (a request answered by its
    /// deadline still counts until its connection was closed and its task ended): beyond
    /// it, a request is refused at once, "not written" (queue full). Far above what a
    /// healthy server needs (a few per connection), it bounds what a stalled server can
    /// make the instance hold. The same bound as the SQLite store's write queue.
    public var maximumRequestsInFlight: Int = PostgresStoreConfiguration.defaultMaximumRequestsInFlight
    public static let defaultMaximumRequestsInFlight = 1_000
    /// How long the recorded answer of a request with an Idempotency-Key is kept.
    public var idempotencyRetention: Duration
    /// How often the background cleanup looks for expired idempotency records.
    public var idempotencyCleanupInterval: Duration
    /// The wall clock `realizada_em` comes from (microseconds since the epoch); tests
    /// replace it to step time backwards.
    public var wallClock: @Sendable () -> Int64 = WallClock.nowMicroseconds

    public static let defaultMaximumConnections = 6

    public init(
        url: PostgresURL,
        maximumConnections: Int = PostgresStoreConfiguration.defaultMaximumConnections,
        writeDeadline: Duration = .seconds(2),
        idempotencyRetention: Duration = .seconds(24 * 60 * 60),
        idempotencyCleanupInterval: Duration = .seconds(60)
    ) {
        self.url = url
        self.maximumConnections = maximumConnections
        self.writeDeadline = writeDeadline
        self.idempotencyRetention = idempotencyRetention
        self.idempotencyCleanupInterval = idempotencyCleanupInterval
    }
}

extension Duration {
    var wholeMicroseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
    }

    var wholeMilliseconds: Int64 { wholeMicroseconds / 1_000 }
}
