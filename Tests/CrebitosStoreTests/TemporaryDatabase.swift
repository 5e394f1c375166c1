import CrebitosStore
import Foundation
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
