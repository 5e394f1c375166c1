import CrebitosLedger
import Dispatch
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
/// Requests queue here; one thread drains the queue: it takes every request waiting at
/// that moment (up to a batch limit), takes the cross-process lock, runs them all in one
/// `BEGIN IMMEDIATE` transaction, commits (one fsync for the whole batch with
/// `synchronous=FULL`), releases the lock, then answers each request. Under light load
/// a batch holds one request and this is a plain immediate transaction; under heavy load
/// the lock and the fsync are paid once per batch instead of once per request, and a
/// process holds the lock once per batch, which keeps the two processes taking turns.
///
/// A debit refused for insufficient limit changes nothing (its `UPDATE` matches no row),
/// so it does not disturb the other requests of its batch.
final class GroupCommitWriter: Sendable {
    private struct Waiter: Sendable {
        let write: PendingWrite
        let completion: @Sendable (Result<TransactionReceipt, any Error>) -> Void
    }

    private struct Queue: ~Copyable {
        var waiting: [Waiter] = []
        /// True while the drain loop is scheduled or running: new arrivals just join
        /// the queue, and the loop picks them up in its next batch.
        var isDraining = false
    }

    private let database: DatabasePool
    private let lock: CrossProcessLock
    private let maximumBatchSize: Int
    private let queue = Mutex(Queue())
    private let thread = DispatchQueue(label: "crebitos.group-commit")

    init(database: DatabasePool, lock: CrossProcessLock, maximumBatchSize: Int) {
        self.database = database
        self.lock = lock
        self.maximumBatchSize = max(1, maximumBatchSize)
    }

    /// Queues a write; `completion` is called on the writer's thread once it committed
    /// (or failed).
    func submit(_ write: PendingWrite, completion: @escaping @Sendable (Result<TransactionReceipt, any Error>) -> Void) {
        let startDrain = queue.withLock { queue in
            queue.waiting.append(Waiter(write: write, completion: completion))
            if queue.isDraining { return false }
            queue.isDraining = true
            return true
        }
        if startDrain {
            thread.async { self.drain() }
        }
    }

    private func drain() {
        while true {
            let batch = queue.withLock { queue -> [Waiter] in
                if queue.waiting.isEmpty {
                    queue.isDraining = false
                    return []
                }
                let count = min(queue.waiting.count, maximumBatchSize)
                let batch = Array(queue.waiting.prefix(count))
                queue.waiting.removeFirst(count)
                return batch
            }
            if batch.isEmpty { return }
            commit(batch)
        }
    }

    private func commit(_ batch: [Waiter]) {
        do {
            let receipts = try lock.withExclusiveLock {
                try database.writeWithoutTransaction { db in
                    var receipts: [TransactionReceipt] = []
                    receipts.reserveCapacity(batch.count)
                    // IMMEDIATE: take SQLite's write lock now, before reading any
                    // balance, so no other writer can commit between our check and our
                    // update. https://www.sqlite.org/lang_transaction.html
                    try db.inTransaction(.immediate) {
                        let now = WallClock.nowMicroseconds()
                        for waiter in batch {
                            receipts.append(try LedgerWrites.apply(waiter.write, in: db, at: now))
                        }
                        return .commit
                    }
                    return receipts
                }
            }
            // Answer only after COMMIT returned: a 200 means durable.
            for (waiter, receipt) in zip(batch, receipts) {
                waiter.completion(.success(receipt))
            }
        } catch {
            // The transaction was rolled back entirely: nothing of this batch is stored.
            for waiter in batch {
                waiter.completion(.failure(error))
            }
        }
    }
}
