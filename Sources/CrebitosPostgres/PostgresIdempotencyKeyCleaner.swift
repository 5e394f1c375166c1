import Logging
import PostgresNIO
import ServiceLifecycle

/// Deletes idempotency records older than ``PostgresStoreConfiguration/idempotencyRetention``,
/// off the request path, like the SQLite store's `IdempotencyKeyCleaner`: every
/// ``PostgresStoreConfiguration/idempotencyCleanupInterval``, expired rows in batches of
/// ``batchSize``, each batch its own short transaction (row locks on the deleted records
/// only, so writers of other keys never wait for it). Several instances may run it at
/// once: a row deleted by one is simply not found by the other.
public struct PostgresIdempotencyKeyCleaner: Service {
    static let batchSize: Int64 = 500

    let ledger: PostgresLedger
    let logger: Logger

    public func run() async throws {
        while !Task.isShuttingDownGracefully {
            do {
                let interval = ledger.configuration.idempotencyCleanupInterval
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            } catch {
                break  // cancelled: the process is stopping
            }
            do {
                let deleted = try await deleteExpired()
                if deleted > 0 { logger.debug("expired idempotency records deleted", metadata: ["count": "\(deleted)"]) }
            } catch {
                logger.warning("idempotency record cleanup failed", metadata: ["error": "\(String(reflecting: error))"])
            }
        }
    }

    /// Deletes every record created before now − retention; returns how many.
    public func deleteExpired() async throws -> Int {
        let cutoff = ledger.configuration.wallClock() - ledger.configuration.idempotencyRetention.wholeMicroseconds
        var total = 0
        while true {
            let rows = try await ledger.client.query(
                """
                WITH d AS (
                    DELETE FROM idempotency_keys WHERE (cliente_id, key) IN (
                        SELECT cliente_id, key FROM idempotency_keys WHERE created_at < \(cutoff)
                        ORDER BY created_at LIMIT \(Self.batchSize))
                    RETURNING 1
                )
                SELECT COUNT(*) FROM d
                """,
                logger: logger
            ).collect()
            let deleted = Int(try rows.first?.decode(Int64.self) ?? 0)
            total += deleted
            if deleted < Self.batchSize { return total }
        }
    }
}
