import AsyncHTTPClient
import Foundation
import NIOCore
import XCTest

/// A real `crebitos` server process, started from the binary `swift build` produced.
final class ServerProcess: @unchecked Sendable {
    let process = Process()
    let logURL: URL
    let name: String
    private(set) var baseURL = ""

    /// The server binary: `$CREBITOS_BINARY`, or `crebitos` next to the test bundle
    /// (both are in SwiftPM's bin directory).
    static func binaryURL() throws -> URL {
        if let path = ProcessInfo.processInfo.environment["CREBITOS_BINARY"] {
            return URL(fileURLWithPath: path)
        }
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("crebitos")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory.deleteLastPathComponent()
        }
        throw CocoaError(.fileNoSuchFile)
    }

    init(
        name: String, databasePath: String, listen: String, directory: URL, synchronous: String = "full",
        extraArguments: [String] = [], environment: [String: String] = [:]
    ) throws {
        self.name = name
        logURL = directory.appendingPathComponent("\(name).log")
        FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let log = try FileHandle(forWritingTo: logURL)
        // Through scripts/with-container-capabilities (it execs, so the pid is the server's):
        // the server runs with a container's capabilities, not root's, so what would fail in
        // a container fails here too.
        process.executableURL = Self.containerCapabilitiesWrapper
        process.arguments = [
            try Self.locateBinary().path,
            "--database", databasePath, "--listen", listen, "--instance", name, "--synchronous", synchronous,
        ] + extraArguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardOutput = log
        process.standardError = log
        if listen.hasPrefix("unix:") {
            baseURL = "http+unix://" + String(listen.dropFirst(5)).addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        }
    }

    /// The two instances of the stack on one database: api01 on TCP (an ephemeral port of
    /// 127.0.0.1), api02 on a Unix socket in `directory`. Not started.
    static func pair(databasePath: String, directory: URL) throws -> [ServerProcess] {
        [
            try ServerProcess(name: "api01", databasePath: databasePath, listen: "127.0.0.1:0", directory: directory),
            try ServerProcess(
                name: "api02", databasePath: databasePath,
                listen: "unix:" + directory.appendingPathComponent("api02.sock").path, directory: directory),
        ]
    }

    /// scripts/with-container-capabilities, found from this file's place in the repository.
    static let containerCapabilitiesWrapper = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("scripts/with-container-capabilities")

    /// The capabilities the server process runs with (`CapEff` of /proc/PID/status).
    var effectiveCapabilities: UInt64? {
        guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") })
        else { return nil }
        return UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16)
    }

    private static func locateBinary() throws -> URL {
        do {
            return try binaryURL()
        } catch {
            XCTFail("the crebitos binary was not found next to the tests: run `swift build` before `swift test`, or set CREBITOS_BINARY")
            throw error
        }
    }

    func start() throws {
        try process.run()
    }

    /// Waits until the server logged its address and answers `/health`.
    func waitUntilReady(client: HTTPClient, timeout: TimeInterval = 30) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard process.isRunning else { throw ServerError.exited(log: log) }
            if baseURL.isEmpty, let port = listeningPort() {
                baseURL = "http://127.0.0.1:\(port)"
            }
            if !baseURL.isEmpty,
               let response = try? await client.execute(HTTPClientRequest(url: baseURL + "/health"), timeout: .seconds(1)),
               response.status == .ok
            {
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ServerError.notReady(log: log)
    }

    /// The port of `--listen 127.0.0.1:0`, from the server's start-up log line.
    private func listeningPort() -> Int? {
        guard let range = log.range(of: "listening on 127.0.0.1:") else { return nil }
        return Int(log[range.upperBound...].prefix { $0.isNumber })
    }

    var log: String {
        (try? String(contentsOf: logURL, encoding: .utf8)) ?? ""
    }

    /// Sends SIGTERM and returns at once.
    func sendTerminate() {
        process.terminate()
    }

    func terminate() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    enum ServerError: Error {
        case exited(log: String)
        case notReady(log: String)
    }
}
