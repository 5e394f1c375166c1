import CrebitosStore
import Foundation

/// A fresh directory per test, removed afterwards: the database file, its WAL and its
/// lock file all live in it.
final class TemporaryDirectory {
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
