import CrebitosStore
import Foundation
import GRDB
import Synchronization
import XCTest

/// A fresh directory per test, removed afterwards: the database file, its WAL and its
/// lock file all live in it.
final class TemporaryDirectory: Sendable {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("crebitos-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    var databasePath: String { url.appendingPathComponent("rinha.db").path }

    deinit {
        try? FileManager.default.removeItem(at: url)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The test's own hold on a database's lock file, standing in for another instance that
/// took the lock and froze (SIGSTOP, a stalled disk): `flock` on a descriptor of its own.
final class LockFileHolder {
    private let descriptor: Int32

    init(lockPath: String) throws {
        descriptor = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0, flock(descriptor, LOCK_EX) == 0 else {
            throw CocoaError(.fileReadNoPermission)
        }
    }

    func release() {
        flock(descriptor, LOCK_UN)
    }

    deinit {
        close(descriptor)
    }
}

/// Polls `condition` every millisecond, up to 10 s (a bound for a broken test, not a timing
/// assertion).
func waitUntil(_ condition: () -> Bool, file: StaticString = #filePath, line: UInt = #line) async throws {
    for _ in 0..<10_000 {
        if condition() { return }
        try await Task.sleep(for: .milliseconds(1))
    }
    XCTFail("condition never held", file: file, line: line)
}

/// SQLite's write lock held from outside our flock, as the sqlite3 CLI in a `BEGIN IMMEDIATE`
/// holds it, on a thread of its own (the hold blocks that thread). `init` returns once the lock
/// is held, and throws rather than hangs: the holder's own error (the lock could not be taken),
/// or a timeout. The hold ends at `release()` or after `holdAtMost` seconds, with `end`.
final class OutsideWriteLock: Sendable {
    struct TimedOut: Error, CustomStringConvertible {
        let description: String
    }

    private let queue: DatabaseQueue
    private let finish = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    private let failure = Mutex<(any Error)?>(nil)
    private let ended = Mutex(false)

    init(path: String, holdAtMost: TimeInterval? = nil, end: String = "COMMIT", timeout: TimeInterval = 10) throws {
        let queue = try DatabaseQueue(path: path)
        self.queue = queue
        let started = DispatchSemaphore(value: 0)
        Thread { [self] in
            do {
                try queue.writeWithoutTransaction { db in
                    try db.execute(sql: "BEGIN IMMEDIATE")
                    started.signal()
                    _ = finish.wait(timeout: holdAtMost.map { .now() + $0 } ?? .distantFuture)
                    try db.execute(sql: end)
                }
            } catch {
                failure.withLock { $0 = error }
                started.signal()
            }
            ended.withLock { $0 = true }
            done.signal()
        }.start()
        guard started.wait(timeout: .now() + timeout) == .success else {
            throw TimedOut(description: "the outside write lock was not taken within \(timeout) s")
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }

    /// Whether the hold has ended (by `release()` or after `holdAtMost`).
    var hasEnded: Bool { ended.withLock { $0 } }

    /// Ends the hold, waits (at most `timeout`) until the holder's transaction has ended, and
    /// throws what it hit.
    func release(timeout: TimeInterval = 10) throws {
        finish.signal()
        guard done.wait(timeout: .now() + timeout) == .success else {
            throw TimedOut(description: "the outside write lock was not released within \(timeout) s")
        }
        if let error = failure.withLock({ $0 }) { throw error }
        try queue.close()
    }
}
