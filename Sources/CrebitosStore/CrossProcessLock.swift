import Synchronization

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
/// Writers here poll `flock(LOCK_NB)` with a back-off that starts at 20 µs and stops
/// growing at 1 ms, so a released lock is seen within about a millisecond, and the wait
/// ends at a deadline: a frozen holder (SIGSTOP, a stalled disk) makes writes fail
/// instead of piling up forever. `BEGIN IMMEDIATE` still runs inside this lock, so
/// anything else writing the file (the sqlite3 CLI) is excluded by SQLite as usual.
///
/// `flock` locks belong to an open file description, not to a process (unlike `fcntl`
/// record locks), so two instances in one process exclude each other too: tests rely on
/// it. For the same reason one instance must not be used by two threads at once.
public final class CrossProcessLock: Sendable {
    public let path: String
    /// Replaced when the lock file turns out to have been deleted or replaced.
    private let descriptor: Mutex<Int32>

    public init(path: String) throws(StoreError) {
        self.path = path
        descriptor = Mutex(try Self.openLockFile(path))
    }

    deinit {
        descriptor.withLock { close($0) }
    }

    /// The lock file of a database: next to the file its path resolves to, so that two
    /// spellings of one path (a symlinked directory, `..`, a relative path) lock the same
    /// file. The database itself may not exist yet; its directory must.
    public static func lockPath(forDatabase databasePath: String) -> String {
        resolvedDatabasePath(databasePath) + ".lock"
    }

    static func resolvedDatabasePath(_ databasePath: String) -> String {
        if let resolved = realPath(databasePath) { return resolved }
        let slash = databasePath.lastIndex(of: "/")
        let directory = slash.map { databasePath[..<$0].isEmpty ? "/" : String(databasePath[..<$0]) } ?? "."
        let name = slash.map { String(databasePath[databasePath.index(after: $0)...]) } ?? databasePath
        guard let resolvedDirectory = realPath(directory) else { return databasePath }
        return resolvedDirectory == "/" ? "/" + name : resolvedDirectory + "/" + name
    }

    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Runs `body` while holding the lock, waiting as long as another holder needs. Only
    /// for start-up, which has nothing better to do than wait.
    public func withExclusiveLock<T>(_ body: () throws -> T) throws -> T {
        _ = try acquire(until: nil)
        defer { release() }
        return try body()
    }

    /// Takes the lock, polling until `deadline` (nanoseconds of ``MonotonicClock``; nil:
    /// block until it is free). Returns false when the deadline passed first.
    ///
    /// Turn-taking: a process that has to wait marks itself waiting (a shared OFD record
    /// lock on byte 0 of the lock file, which `flock` does not see), and a process about to
    /// take the lock again first lets a marked waiter go (up to ``handoffNanoseconds``).
    /// Without it the holder, whose queue refills while it commits, takes the lock back
    /// microseconds after releasing it, before the waiter's next poll: measured with the
    /// disk slowed, one instance committed 26 batches while the other got 4 and answered
    /// its writes 503 at their deadline.
    func acquire(until deadline: UInt64?) throws(StoreError) -> Bool {
        descriptor.withLock { letWaiterGo($0) }
        while true {
            let taken = try descriptor.withLock { descriptor throws(StoreError) -> Bool in
                guard try lockMarkingWait(descriptor, until: deadline) else { return false }
                // The file we locked may no longer be the one at `path` (someone deleted
                // or replaced it while we waited or held it): then another process opening
                // the path locks a different file, and both would write at once. Reopen
                // and lock again.
                if isStillAtPath(descriptor) { return true }
                flock(descriptor, LOCK_UN)
                close(descriptor)
                descriptor = try Self.openLockFile(path)
                return false
            }
            if taken { return true }
            if let deadline, MonotonicClock.nowNanoseconds() >= deadline { return false }
        }
    }

    func release() {
        descriptor.withLock { _ = flock($0, LOCK_UN) }
    }

    /// How long a process about to take the lock again waits for a marked waiter to take
    /// it first: a waiter polls at least every millisecond.
    static let handoffNanoseconds: UInt64 = 3_000_000

    /// `lock`, with this process marked as waiting once it has waited ``starvedNanoseconds``:
    /// a short wait (the other process committing one batch on a healthy disk) ends by itself
    /// and costs the holder nothing; only a process that keeps losing asks for its turn.
    private func lockMarkingWait(_ descriptor: Int32, until deadline: UInt64?) throws(StoreError) -> Bool {
        if flock(descriptor, LOCK_EX | LOCK_NB) == 0 { return true }
        guard let deadline else { return try lock(descriptor, until: nil) }
        let starvedAt = MonotonicClock.nowNanoseconds() + Self.starvedNanoseconds
        if try lock(descriptor, until: min(deadline, starvedAt)) { return true }
        guard MonotonicClock.nowNanoseconds() < deadline else { return false }
        setWaitMark(descriptor, F_RDLCK)
        defer { setWaitMark(descriptor, F_UNLCK) }
        return try lock(descriptor, until: deadline)
    }

    /// How long a writer waits before it marks itself waiting.
    static let starvedNanoseconds: UInt64 = 5_000_000

    /// Waits (briefly) while another process is marked waiting, so that it takes the lock
    /// before this one takes it again.
    private func letWaiterGo(_ descriptor: Int32) {
        let started = MonotonicClock.nowNanoseconds()
        while otherIsWaiting(descriptor), MonotonicClock.nowNanoseconds() - started < Self.handoffNanoseconds {
            var pause = timespec(tv_sec: 0, tv_nsec: 200_000)
            nanosleep(&pause, nil)
        }
    }

    /// Linux's open-file-description record locks (fcntl.h; Glibc exports them only under
    /// _GNU_SOURCE). They belong to the open file, like flock, and vanish with the process.
    private static let ofdGetLock: Int32 = 36  // F_OFD_GETLK
    private static let ofdSetLock: Int32 = 37  // F_OFD_SETLK

    /// A record lock of `type` on byte 0 of the lock file: where waiters leave their mark.
    private static func waitMark(_ type: Int32) -> flock {
        var mark = flock()
        mark.l_type = Int16(type)
        mark.l_whence = Int16(SEEK_SET)
        mark.l_start = 0
        mark.l_len = 1
        return mark
    }

    private func setWaitMark(_ descriptor: Int32, _ type: Int32) {
        var mark = Self.waitMark(type)
        _ = fcntl(descriptor, Self.ofdSetLock, &mark)
    }

    /// Whether a read mark of another open file description (another process's waiter)
    /// is on byte 0: a write lock there would conflict with it.
    private func otherIsWaiting(_ descriptor: Int32) -> Bool {
        var probe = Self.waitMark(F_WRLCK)
        guard fcntl(descriptor, Self.ofdGetLock, &probe) == 0 else { return false }
        return probe.l_type != Int16(F_UNLCK)
    }

    private func lock(_ descriptor: Int32, until deadline: UInt64?) throws(StoreError) -> Bool {
        guard let deadline else {
            while flock(descriptor, LOCK_EX) != 0 {
                let error = errno
                if error == EINTR { continue }
                throw StoreError.lockFile(path: path, message: Self.message(error))
            }
            return true
        }
        var pause: UInt64 = 20_000
        while true {
            if flock(descriptor, LOCK_EX | LOCK_NB) == 0 { return true }
            let error = errno
            guard error == EWOULDBLOCK || error == EINTR else {
                throw StoreError.lockFile(path: path, message: Self.message(error))
            }
            let now = MonotonicClock.nowNanoseconds()
            if now >= deadline { return false }
            var sleep = timespec(tv_sec: 0, tv_nsec: Int(min(pause, deadline - now)))
            nanosleep(&sleep, nil)
            pause = min(pause * 2, 1_000_000)
        }
    }

    private func isStillAtPath(_ descriptor: Int32) -> Bool {
        var opened = stat()
        var atPath = stat()
        guard fstat(descriptor, &opened) == 0, stat(path, &atPath) == 0 else { return false }
        return opened.st_dev == atPath.st_dev && opened.st_ino == atPath.st_ino
    }

    private static func openLockFile(_ path: String) throws(StoreError) -> Int32 {
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw .lockFile(path: path, message: message(errno))
        }
        return descriptor
    }

    static func message(_ error: Int32) -> String {
        String(cString: strerror(error))
    }
}
