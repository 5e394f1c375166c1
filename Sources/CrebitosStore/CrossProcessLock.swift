#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An exclusive lock shared by every process (and every store instance) that opens the
/// same database: `flock(2)` on a small sidecar file next to it (`rinha.db.lock`).
///
/// Why not just SQLite's own lock? When a writer finds the database locked, SQLite's
/// busy handler polls with sleeps of 1, 2, 5, 10, 15 ... ms and is not fair between
/// processes: measured here, single waits reached 0.2–2.5 s (see docs/ARCHITECTURE.md).
/// A process blocked in `flock` is woken by the kernel the moment the lock is released,
/// so writers queue on the kernel instead of polling. `BEGIN IMMEDIATE` still runs inside
/// this lock, so anything else writing the file (the sqlite3 CLI) is excluded by SQLite
/// as usual.
///
/// `flock` locks belong to an open file description, not to a process (unlike `fcntl`
/// record locks), so two instances in one process exclude each other too: tests rely on it.
public final class CrossProcessLock: Sendable {
    public let path: String
    private let descriptor: Int32

    public init(path: String) throws(StoreError) {
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw .lockFile(path: path, errno: errno)
        }
        self.path = path
        self.descriptor = descriptor
    }

    deinit {
        close(descriptor)
    }

    /// Runs `body` while holding the lock, waiting as long as another holder needs.
    public func withExclusiveLock<T>(_ body: () throws -> T) throws -> T {
        while flock(descriptor, LOCK_EX) != 0 {
            let error = errno
            if error == EINTR { continue }
            throw StoreError.lockFile(path: path, errno: error)
        }
        defer { flock(descriptor, LOCK_UN) }
        return try body()
    }
}
