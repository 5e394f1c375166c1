#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How to reach the ledger's PostgreSQL database and how to use it.
public struct PostgresStoreConfiguration: Sendable {
    public var url: PostgresURL
    /// Connections this process keeps to the server at most. Every request holds one for a
    /// single statement (two or more with an Idempotency-Key), so a handful serves an
    /// instance with 0.6 CPU; more only adds backends on the server.
    public var maximumConnections: Int
    /// `statement_timeout` of every connection: a statement still running after this long
    /// (waiting for a row lock held by a stuck transaction, a stalled disk) is cancelled by
    /// the server and rolled back, so the write is answered "not written" in bounded time,
    /// like the SQLite store's write deadline.
    public var writeDeadline: Duration
    /// How long the recorded answer of a request with an Idempotency-Key is kept.
    public var idempotencyRetention: Duration
    /// How often the background cleanup looks for expired idempotency records.
    public var idempotencyCleanupInterval: Duration
    /// The wall clock `realizada_em` comes from (microseconds since the epoch); tests
    /// replace it to step time backwards.
    public var wallClock: @Sendable () -> Int64 = PostgresStoreConfiguration.nowMicroseconds

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

    @Sendable
    public static func nowMicroseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1_000_000 + Int64(time.tv_nsec) / 1_000
    }
}

extension Duration {
    var wholeMicroseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
    }

    var wholeMilliseconds: Int64 { wholeMicroseconds / 1_000 }
}
