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

    public init(
        path: String,
        durability: Durability = .full,
        maximumReaders: Int = 4,
        maximumBatchSize: Int = 128,
        busyTimeoutMilliseconds: Int = 10_000,
        checkpoint: CheckpointPolicy = .sqliteAutomatic
    ) {
        self.path = path
        self.durability = durability
        self.maximumReaders = maximumReaders
        self.maximumBatchSize = maximumBatchSize
        self.busyTimeoutMilliseconds = busyTimeoutMilliseconds
        self.checkpoint = checkpoint
    }

    /// The sidecar file whose `flock` serialises start-up and writers across processes.
    public var lockPath: String { path + ".lock" }
}

/// Who checkpoints the WAL (copies committed pages back into the database file).
public enum CheckpointPolicy: Sendable, Equatable {
    /// SQLite's default: the commit that takes the WAL past 1000 pages does it.
    case sqliteAutomatic
    /// A ``WALCheckpointer`` service every `interval`; commits only as a backstop.
    case background(interval: Duration)
}
