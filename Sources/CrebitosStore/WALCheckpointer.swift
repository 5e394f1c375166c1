import GRDB
import Logging
import ServiceLifecycle

/// Copies the WAL back into the database file from a background task, so that no
/// request pays for it.
///
/// By default SQLite checkpoints inside the commit that pushes the WAL past 1000 pages:
/// that commit then also writes the pages back and (with synchronous=FULL) fsyncs the
/// database file, a multi-millisecond stall for one unlucky request every few hundred
/// writes. With this service the writer's automatic checkpoint is raised to a backstop
/// (``backstopPages``, in case no checkpointer runs) and a PASSIVE checkpoint runs every
/// ``interval`` on a connection of its own. PASSIVE never takes the write lock, so
/// writers of both processes go on meanwhile; if the other process is checkpointing at
/// that moment SQLite answers BUSY at once and this round is simply skipped.
/// https://www.sqlite.org/wal.html#automatic_checkpoint
public struct WALCheckpointer: Service {
    /// The writer's own automatic checkpoint while a checkpointer runs: about 40 MB of WAL.
    static let backstopPages = 10_000

    let database: DatabaseQueue
    let interval: Duration
    let logger: Logger

    init(path: String, interval: Duration, logger: Logger) throws {
        var configuration = Configuration()
        configuration.label = "crebitos.checkpoint"
        configuration.busyMode = .immediateError
        database = try DatabaseQueue(path: path, configuration: configuration)
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully {
            do {
                try await Task.sleep(for: interval)
            } catch {
                break  // cancelled: the process is stopping
            }
            do {
                try await database.writeWithoutTransaction { db in
                    try db.checkpoint(.passive)
                }
            } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED {
                continue  // the other process is checkpointing: nothing to do this round
            } catch {
                logger.warning("background checkpoint failed", metadata: ["error": "\(error)"])
            }
        }
        try? database.close()
    }
}
