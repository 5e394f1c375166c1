import Dispatch
import GRDB
import Logging
import ServiceLifecycle

/// Deletes idempotency records older than ``StoreConfiguration/idempotencyRetention``,
/// off the request path: every ``StoreConfiguration/idempotencyCleanupInterval`` it
/// deletes expired rows in small batches, each one a short write transaction taken
/// under the cross-process lock like any group commit (with its own lock descriptor, so
/// it queues behind this process's writer too), so it never holds the writers up for
/// more than one small batch.
public struct IdempotencyKeyCleaner: Service {
    /// Rows per transaction: a few milliseconds of work at most.
    static let batchSize = 500
    /// How long one round waits for the lock before trying again next round.
    static let lockWait: Duration = .seconds(1)

    let database: DatabasePool
    let lock: CrossProcessLock
    let retention: Duration
    let interval: Duration
    let wallClock: @Sendable () -> Int64
    let logger: Logger

    init(database: DatabasePool, configuration: StoreConfiguration, logger: Logger) throws {
        self.database = database
        lock = try CrossProcessLock(path: configuration.lockPath)
        retention = configuration.idempotencyRetention
        interval = configuration.idempotencyCleanupInterval
        wallClock = configuration.wallClock
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully {
            do {
                // The interval is long (a minute): a graceful shutdown must not wait it out.
                let interval = self.interval
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            } catch {
                break  // cancelled: the process is stopping
            }
            do {
                // On a thread of its own: waiting for the lock must not hold one of the
                // few threads Swift concurrency runs tasks on.
                let deleted = try await withCheckedThrowingContinuation { continuation in
                    DispatchQueue.global().async { continuation.resume(with: Result { try deleteExpired() }) }
                }
                if deleted > 0 { logger.debug("expired idempotency records deleted", metadata: ["count": "\(deleted)"]) }
            } catch {
                logger.warning("idempotency record cleanup failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Deletes every record created before now − retention, one batch per lock hold;
    /// returns how many. Stops early (to try again next round) if the lock stays taken.
    func deleteExpired() throws -> Int {
        let cutoff = wallClock() - retention.wholeMicroseconds
        var total = 0
        while true {
            guard try lock.acquire(until: MonotonicClock.nowNanoseconds() + MonotonicClock.nanoseconds(Self.lockWait)) else {
                return total
            }
            defer { lock.release() }
            let deleted = try database.write { db in
                try db.execute(
                    sql: """
                        DELETE FROM idempotency_keys WHERE (cliente_id, key) IN (
                            SELECT cliente_id, key FROM idempotency_keys WHERE created_at < ?
                            ORDER BY created_at LIMIT \(Self.batchSize))
                        """,
                    arguments: [cutoff])
                return db.changesCount
            }
            total += deleted
            if deleted < Self.batchSize { return total }
        }
    }
}

extension Duration {
    var wholeMicroseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
    }
}
