import CrebitosLedger
import CoreMetrics

/// How to open the ledger's SQLite file.
public struct StoreConfiguration: Sendable {
    /// The database file. Its directory must exist; the file is created if missing.
    public var path: String
    public var durability: Durability
    /// Read connections per process: statements read concurrently on these.
    public var maximumReaders: Int
    /// The most transactions one group commit may carry. Bounds how long the
    /// cross-process lock is held in one go, so the other process gets its turn.
    public var maximumBatchSize: Int
    /// How long a connection waits for a SQLite lock held by someone outside our
    /// cross-process lock (the sqlite3 CLI, a backup) before giving up with an error.
    public var busyTimeoutMilliseconds: Int
    /// Who copies the WAL back into the database file.
    public var checkpoint: CheckpointPolicy
    /// How long a write may wait (in the queue, for the cross-process lock, for SQLite's
    /// lock) before it is refused with ``LedgerUnavailable/notWritten(_:)`` instead of
    /// being written. Checked after the locks are taken and before writing, so a refused
    /// write is never stored. Well below nginx's `proxy_read_timeout` (10 s), so the
    /// client hears "not written" from us rather than a 504 that says nothing.
    public var writeDeadline: Duration
    /// The most writes that may wait for their turn; beyond it a write is refused at once
    /// (``LedgerUnavailable/Reason/queueFull``). 1000 is far more than one instance
    /// commits within ``writeDeadline`` when the other instance holds the lock, so the
    /// bound only cuts a queue whose writes would miss their deadline anyway.
    public var maximumQueuedWrites: Int
    /// How long the recorded answer of a request with an Idempotency-Key is kept: a retry
    /// within this time is safe. Expired records are deleted in the background.
    public var idempotencyRetention: Duration
    /// How often the background cleanup looks for expired idempotency records.
    public var idempotencyCleanupInterval: Duration
    /// `PRAGMA journal_size_limit`: the size the WAL file is cut back to when SQLite
    /// restarts it after a checkpoint. 64 MiB is above what the WAL reaches in normal
    /// running (1000 pages, about 4 MB, between automatic checkpoints; at most the
    /// background checkpointer's 40 MB backstop), so steady operation never pays for
    /// truncating and regrowing the file; after an unusual burst (checkpoints held off
    /// by a long reader or a frozen process) the file shrinks back instead of keeping
    /// its peak size on disk forever.
    public var walSizeLimitBytes: Int
    /// The wall clock `realizada_em` comes from (microseconds since the epoch); tests
    /// replace it to step time backwards.
    var wallClock: @Sendable () -> Int64 = WallClock.nowMicroseconds
    /// Where the write path's metrics go (batch size, lock wait, queue depth); nil
    /// records nothing.
    public var metricsFactory: (any MetricsFactory)?

    public init(
        path: String,
        durability: Durability = .full,
        maximumReaders: Int = 4,
        maximumBatchSize: Int = 128,
        busyTimeoutMilliseconds: Int = 10_000,
        checkpoint: CheckpointPolicy = .sqliteAutomatic,
        writeDeadline: Duration = .seconds(2),
        maximumQueuedWrites: Int = 1_000,
        idempotencyRetention: Duration = .seconds(24 * 60 * 60),
        idempotencyCleanupInterval: Duration = .seconds(60),
        walSizeLimitBytes: Int = 64 * 1024 * 1024
    ) {
        self.path = path
        self.durability = durability
        self.maximumReaders = maximumReaders
        self.maximumBatchSize = maximumBatchSize
        self.busyTimeoutMilliseconds = busyTimeoutMilliseconds
        self.checkpoint = checkpoint
        self.writeDeadline = writeDeadline
        self.maximumQueuedWrites = maximumQueuedWrites
        self.idempotencyRetention = idempotencyRetention
        self.idempotencyCleanupInterval = idempotencyCleanupInterval
        self.walSizeLimitBytes = walSizeLimitBytes
    }

    /// The sidecar file whose `flock` serialises start-up and writers across processes:
    /// next to the database's resolved path (see ``CrossProcessLock/lockPath(forDatabase:)``).
    public var lockPath: String { CrossProcessLock.lockPath(forDatabase: path) }
}

/// Who checkpoints the WAL (copies committed pages back into the database file).
public enum CheckpointPolicy: Sendable, Equatable {
    /// SQLite's default: the commit that takes the WAL past 1000 pages does it.
    case sqliteAutomatic
    /// A ``WALCheckpointer`` service every `interval`; commits only as a backstop.
    case background(interval: Duration)
}
