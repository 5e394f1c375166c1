import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How long a connection of this process may wait for a SQLite lock held by someone outside
/// our cross-process lock (the sqlite3 CLI in a `BEGIN IMMEDIATE`, a backup, WAL recovery).
///
/// One busy handler serves every connection of the pool, so it tells them apart by thread:
/// - the writer, while it commits a batch, waits until the batch's latest write deadline (or
///   the configured busy timeout, if that comes first): past it every write of the batch is
///   late anyway and is refused as such, never written;
/// - anyone else (a statement, on a connection's event loop) waits at most
///   ``readerMilliseconds``: a statement answers 503 rather than hold the event loop, and
///   every other request of the instance, for seconds.
final class BusyWaitBudget: Sendable {
    /// The longest a statement waits for SQLite's lock.
    static let readerMilliseconds = 200

    private let busyTimeoutNanoseconds: UInt64
    /// The busy handler's tries that add up to ``readerMilliseconds`` (or the busy timeout).
    private let readerMaximumTries: Int
    /// The writer thread while it commits (0: none), and its deadline on ``MonotonicClock``.
    private let writer = Atomic<UInt>(0)
    private let writerDeadline = Atomic<UInt64>(0)
    private let writerStarted = Atomic<UInt64>(0)

    init(busyTimeoutMilliseconds: Int) {
        busyTimeoutNanoseconds = UInt64(max(0, busyTimeoutMilliseconds)) * 1_000_000
        readerMaximumTries = SQLiteLedger.busyTries(forMilliseconds: min(Self.readerMilliseconds, max(0, busyTimeoutMilliseconds)))
    }

    /// The calling thread (the writer's) commits until `deadline`.
    func beginWrite(until deadline: UInt64) {
        writerDeadline.store(deadline, ordering: .relaxed)
        writerStarted.store(MonotonicClock.nowNanoseconds(), ordering: .relaxed)
        writer.store(UInt(pthread_self()), ordering: .releasing)
    }

    func endWrite() {
        writer.store(0, ordering: .releasing)
    }

    /// Whether the writer's wait ended at its deadline (rather than at the busy timeout).
    func writerReachedDeadline() -> Bool {
        MonotonicClock.nowNanoseconds() >= writerDeadline.load(ordering: .relaxed)
    }

    /// The busy handler's answer: whether to try again (after a short sleep) or give up.
    func mayRetry(tries: Int) -> Bool {
        let now = MonotonicClock.nowNanoseconds()
        if writer.load(ordering: .acquiring) == UInt(pthread_self()) {
            let started = writerStarted.load(ordering: .relaxed)
            return now < writerDeadline.load(ordering: .relaxed) && now - started < busyTimeoutNanoseconds
        }
        return tries < readerMaximumTries
    }
}
