import CrebitosLedger
import Dispatch
import Foundation
import GRDB
import Synchronization

/// A transaction request waiting for its turn to be committed.
struct PendingWrite: Sendable {
    let request: TransactionRequest
    let clientID: Int64
    let idempotencyKey: IdempotencyKey?
}

/// The single writer of one process.
///
/// Requests queue here, and one thread of its own (never a connection's event loop) drains
/// the queue: it takes the cross-process lock, takes every request waiting at that moment
/// (up to a batch limit), runs them all in one `BEGIN IMMEDIATE` transaction, commits (one
/// fsync for the whole batch with `synchronous=FULL`), releases the lock, then answers each
/// request. Under light load a batch holds one request and this is a plain immediate
/// transaction; under heavy load, or while the disk is slow to sync, the lock and the fsync
/// are paid once per batch instead of once per request: every write that arrives during a
/// slow commit joins the next one, so batches grow with the stall. A process holds the lock
/// once per batch, which keeps the two processes taking turns.
///
/// Why a thread of its own: a commit waits for the disk (the fsync, and SQLite's automatic
/// checkpoint inside some commits), which here usually takes 0.3 ms and now and then 50 ms
/// to over a second. On an event loop that wait stopped every connection of the loop, reads
/// included, and left requests unread in their sockets; on this thread it stops only the
/// writes that need it (docs/ARCHITECTURE.md, "No disk wait on an event loop").
///
/// What each answer promises:
/// - Every write has a deadline (arrival on the monotonic clock + ``StoreConfiguration/writeDeadline``).
///   The lock is waited for until the oldest write's deadline, and once the locks are
///   held, before anything is written, every write of the batch past its deadline is
///   answered `notWritten(.deadlineExceeded)` and skipped: a refusal is never committed
///   later.
/// - Each request runs inside its own SAVEPOINT: a request whose statements fail is
///   rolled back alone and answered `notWritten(.transactionFailed)`; its neighbours
///   commit. Only a lost transaction fails the batch: BEGIN failing (nothing written) or
///   COMMIT failing (`outcomeUnknown`: the commit may or may not have reached the disk).
/// - A full queue refuses at once (`queueFull`); after ``close()`` began, new writes are
///   refused (`shuttingDown`) and the queued ones are still committed or refused.
final class GroupCommitWriter: Sendable {
    private struct Waiter: Sendable {
        let write: PendingWrite
        /// Nanoseconds of ``MonotonicClock``.
        let deadline: UInt64
        let completion: @Sendable (Result<TransactionReceipt, any Error>) -> Void

        func answer(_ result: Result<TransactionReceipt, LedgerUnavailable>) {
            completion(result.mapError { $0 as any Error })
        }
    }

    private struct Queue: ~Copyable {
        var waiting: [Waiter] = []
        /// True while the drain loop is scheduled or running: new arrivals just join
        /// the queue, and the loop picks them up in its next batch.
        var isDraining = false
        var isClosing = false
    }

    private let database: DatabasePool
    private let lock: CrossProcessLock
    private let busyBudget: BusyWaitBudget
    private let maximumBatchSize: Int
    private let maximumQueuedWrites: Int
    private let writeDeadline: UInt64
    private let timestamps: CommitTimestamps
    private let metrics: StoreMetrics?
    private let queue = Mutex(Queue())
    /// Started lazily: the writer hands itself to it, so it needs `self`.
    private let thread = Mutex<WriterThread?>(nil)

    init(database: DatabasePool, lock: CrossProcessLock, busyBudget: BusyWaitBudget, configuration: StoreConfiguration) {
        self.database = database
        self.lock = lock
        self.busyBudget = busyBudget
        maximumBatchSize = max(1, configuration.maximumBatchSize)
        maximumQueuedWrites = max(1, configuration.maximumQueuedWrites)
        writeDeadline = MonotonicClock.nanoseconds(configuration.writeDeadline)
        timestamps = CommitTimestamps(wallClock: configuration.wallClock)
        metrics = StoreMetrics(factory: configuration.metricsFactory)
    }

    /// Queues a write; `completion` is called once, on the writer's thread once it committed
    /// or was refused (or at once, on the caller's thread, when the queue refuses it).
    /// `alreadyWaited`: how long the request waited before this process read it; its deadline
    /// counts from then, and one that is already past is refused without being queued.
    func submit(
        _ write: PendingWrite, alreadyWaited: Duration = .zero,
        completion: @escaping @Sendable (Result<TransactionReceipt, any Error>) -> Void
    ) {
        let waited = MonotonicClock.nanoseconds(alreadyWaited)
        guard waited < writeDeadline else { return completion(.failure(LedgerUnavailable.notWritten(.deadlineExceeded))) }
        let deadline = MonotonicClock.nowNanoseconds() + (writeDeadline - waited)
        let admitted = queue.withLock { queue -> Result<Bool, LedgerUnavailable> in
            if queue.isClosing { return .failure(.notWritten(.shuttingDown)) }
            if queue.waiting.count >= maximumQueuedWrites { return .failure(.notWritten(.queueFull)) }
            queue.waiting.append(Waiter(write: write, deadline: deadline, completion: completion))
            if queue.isDraining { return .success(false) }
            queue.isDraining = true
            return .success(true)
        }
        switch admitted {
        case .failure(let refusal):
            completion(.failure(refusal))
        case .success(let startDrain):
            if startDrain { writerThread().wake() }
        }
    }

    /// Refuses new writes from now on and returns once every queued write was answered
    /// (each is bounded by its deadline).
    func close() {
        queue.withLock { $0.isClosing = true }
        while queue.withLock({ $0.isDraining }) { usleep(1_000) }
        thread.withLock { $0?.stop() }
    }

    deinit {
        thread.withLock { $0?.stop() }
    }

    /// The writer thread's name, as `top -H`, `/proc/PID/task/*/comm` and perf show it (Linux
    /// keeps 15 bytes of a thread's name). Unnamed, the thread kept the name of the thread
    /// that started it, an event loop's, and a sampler showed the writer's fsyncs as the
    /// event loop's.
    static let threadName = "crebitos-writer"

    private func writerThread() -> WriterThread {
        thread.withLock { thread in
            if let thread { return thread }
            let started = WriterThread(name: Self.threadName) { [weak self] in self?.drain() }
            thread = started
            return started
        }
    }

    /// Writes waiting for their turn (not yet taken into a batch).
    var queuedCount: Int {
        queue.withLock { $0.waiting.count }
    }

    var isClosing: Bool {
        queue.withLock { $0.isClosing }
    }

    private func drain() {
        while true {
            let oldestDeadline = queue.withLock { queue -> UInt64? in
                guard let oldest = queue.waiting.first else {
                    queue.isDraining = false
                    return nil
                }
                return oldest.deadline
            }
            guard let oldestDeadline else { return }
            let locked: Bool
            let waitStarted = MonotonicClock.nowNanoseconds()
            do {
                locked = try lock.acquire(until: oldestDeadline)
                metrics?.lockWait.recordNanoseconds(Int64(MonotonicClock.nowNanoseconds() - waitStarted))
            } catch {
                // The lock file itself is unusable (EIO, EMFILE ...): nothing can be written.
                for waiter in takeBatch() { waiter.answer(.failure(.notWritten(.transactionFailed))) }
                continue
            }
            guard locked else {
                refuseExpiredWrites()
                continue
            }
            // Taken only now, so that writes arriving while we waited for the lock join it.
            let batch = takeBatch()
            let results = commit(batch)
            lock.release()
            // Answer only after COMMIT returned: a 200 means durable.
            for (waiter, result) in zip(batch, results) { waiter.answer(result) }
        }
    }

    private func takeBatch() -> [Waiter] {
        let (batch, waiting) = queue.withLock { queue in
            let waiting = queue.waiting.count
            let count = min(waiting, maximumBatchSize)
            let batch = Array(queue.waiting.prefix(count))
            queue.waiting.removeFirst(count)
            return (batch, waiting)
        }
        if let metrics {
            metrics.queueDepth.record(waiting)
            metrics.batchSize.record(batch.count)
        }
        return batch
    }

    private func refuseExpiredWrites() {
        let now = MonotonicClock.nowNanoseconds()
        let expired = queue.withLock { queue -> [Waiter] in
            let expired = queue.waiting.filter { $0.deadline <= now }
            queue.waiting.removeAll { $0.deadline <= now }
            return expired
        }
        for waiter in expired { waiter.answer(.failure(.notWritten(.deadlineExceeded))) }
    }

    /// Runs the batch in one transaction, each request in its own savepoint; called with
    /// the cross-process lock held.
    private func commit(_ batch: [Waiter]) -> [Result<TransactionReceipt, LedgerUnavailable>] {
        let lost = Array(repeating: Result<TransactionReceipt, LedgerUnavailable>.failure(.notWritten(.transactionFailed)), count: batch.count)
        // Someone outside our flock (the sqlite3 CLI) may hold SQLite's lock: wait for it no
        // longer than the batch's last deadline, after which every write of it is late.
        busyBudget.beginWrite(until: batch.map(\.deadline).max() ?? 0)
        defer { busyBudget.endWrite() }
        return database.writeWithoutTransaction { db in
            // A transaction left open by a ROLLBACK that failed (an I/O error) would make every
            // later BEGIN fail: end it first. (GRDB allows it: see allowsUnsafeTransactions.)
            if db.isInsideTransaction { try? db.execute(sql: "ROLLBACK") }
            // IMMEDIATE: take SQLite's write lock now, before reading any balance, so
            // no other writer can commit between our check and our update.
            // https://www.sqlite.org/lang_transaction.html
            do {
                try db.cachedStatement(sql: "BEGIN IMMEDIATE").execute()
            } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY && busyBudget.writerReachedDeadline() {
                return Array(repeating: .failure(.notWritten(.deadlineExceeded)), count: batch.count)
            } catch {
                return lost
            }
            // Both locks are held: from here on nothing can delay the writes but the
            // commit itself, so this is the last moment a late write can be refused.
            let now = MonotonicClock.nowNanoseconds()
            let performedAt = timestamps.next()
            var results: [Result<TransactionReceipt, LedgerUnavailable>] = []
            results.reserveCapacity(batch.count)
            var anySucceeded = false
            for waiter in batch {
                guard waiter.deadline > now else {
                    results.append(.failure(.notWritten(.deadlineExceeded)))
                    continue
                }
                do {
                    try db.cachedStatement(sql: "SAVEPOINT request").execute()
                    let receipt = try LedgerWrites.apply(waiter.write, in: db, at: performedAt)
                    try db.cachedStatement(sql: "RELEASE request").execute()
                    results.append(.success(receipt))
                    anySucceeded = true
                } catch {
                    // Some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM) make SQLite
                    // roll the whole transaction back by itself: then the savepoint is
                    // gone, the batch's earlier writes too, and continuing would run
                    // the next requests outside any transaction.
                    guard db.isInsideTransaction, (try? db.execute(sql: "ROLLBACK TO request; RELEASE request")) != nil else {
                        if db.isInsideTransaction { try? db.execute(sql: "ROLLBACK") }
                        return lost
                    }
                    results.append(.failure(.notWritten(.transactionFailed)))
                }
            }
            guard anySucceeded else {
                try? db.execute(sql: "ROLLBACK")
                return results
            }
            do {
                try db.cachedStatement(sql: "COMMIT").execute()
            } catch {
                // An I/O error during COMMIT can leave it on disk or not: only a retry
                // with the same Idempotency-Key can tell the client safely.
                if db.isInsideTransaction { try? db.execute(sql: "ROLLBACK") }
                return results.map { result in
                    result.flatMap { _ -> Result<TransactionReceipt, LedgerUnavailable> in .failure(.outcomeUnknown) }
                }
            }
            return results
        }
    }
}

/// The writer's own thread: it sleeps on a semaphore (a futex) until ``wake()``, runs the
/// drain, and sleeps again. A plain thread rather than a Dispatch queue: a hand-off per write
/// (two with the answer's hop back to the event loop) is the price of keeping disk waits off
/// the event loops, and a futex wake is the cheapest hand-off there is.
private final class WriterThread: Sendable {
    private let wakeups = DispatchSemaphore(value: 0)
    private let stopped = Atomic<Bool>(false)

    init(name: String, work: @escaping @Sendable () -> Void) {
        let thread = Thread { [self] in
            // Named from inside, through the kernel's file for the calling thread: Foundation's
            // `Thread.name` does not reach the kernel's name on Linux, and Glibc's
            // pthread_setname_np is not visible to Swift.
            try? name.write(toFile: "/proc/thread-self/comm", atomically: false, encoding: .utf8)
            while true {
                wakeups.wait()
                if stopped.load(ordering: .acquiring) { return }
                work()
            }
        }
        thread.start()
    }

    /// Runs `work` once more (each wake-up is one run).
    func wake() {
        wakeups.signal()
    }

    func stop() {
        stopped.store(true, ordering: .releasing)
        wakeups.signal()
    }
}
