import Foundation
import Logging
import NIOPosix
import PostgresNIO
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The PostgreSQL server the tests use, and a fresh database on it for each test.
///
/// `CREBITOS_TEST_POSTGRES_URL` (a URL whose user may create databases, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`) names an existing server. Without it, the
/// first test that asks starts a throwaway server: Debian's binaries
/// (`/usr/lib/postgresql/<version>/bin`), `initdb` into a temporary directory as the
/// unprivileged `postgres` user when the tests run as root (PostgreSQL refuses to run as
/// root), listening on a free TCP port of 127.0.0.1 only (and a socket in that directory),
/// with fsync on as in production. It is stopped and its directory removed when the test
/// process exits. If it cannot start, the test that asked fails with the reason: no test is
/// skipped for want of a server.
public enum TemporaryPostgres {
    /// The URL of a new, empty database on the test server (its name is unique).
    public static func freshDatabaseURL() async throws -> String {
        let server = try server()
        let name = "crebitos_test_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: ""))"
        try await server.run("CREATE DATABASE \(name)")
        return server.url(database: name)
    }

    /// The server's URL for `database`.
    public static func url(database: String) throws -> String {
        try server().url(database: database)
    }

    private static let state = Mutex<Result<Server, ServerError>?>(nil)

    private static func server() throws -> Server {
        try state.withLock { state in
            if let state { return try state.get() }
            let result: Result<Server, ServerError>
            do {
                if let url = ProcessInfo.processInfo.environment["CREBITOS_TEST_POSTGRES_URL"], !url.isEmpty {
                    result = .success(try Server(existing: url))
                } else {
                    result = .success(try Server.startThrowaway())
                }
            } catch let error as ServerError {
                result = .failure(error)
            } catch {
                result = .failure(ServerError(description: "\(error)"))
            }
            state = result
            return try result.get()
        }
    }

    /// A throwaway server of its own, for a test that stops (SIGSTOP) or kills it, which
    /// must not disturb the other tests' server. Always Debian's binaries, whatever
    /// CREBITOS_TEST_POSTGRES_URL says. ``stop()`` it at the end (also removed at exit).
    public final class Dedicated: Sendable {
        let server: Server
        public let directory: String

        /// With `tls`, the server also speaks TLS, with a self-signed certificate for
        /// localhost and 127.0.0.1 (``certificatePath``, its own CA).
        public init(tls: Bool = false) throws {
            directory = "/tmp/crebitos-pg-\(UUID().uuidString.prefix(8))"
            server = try Server.startThrowaway(in: directory, tls: tls)
        }

        public var certificatePath: String { directory + "/server.crt" }

        /// The server's port on 127.0.0.1.
        public var port: Int { server.port }

        /// The URL of a new, empty database on this server.
        public func freshDatabaseURL() async throws -> String {
            let name = "crebitos_test_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: ""))"
            try await server.run("CREATE DATABASE \(name)")
            return server.url(database: name)
        }

        /// The postmaster and every process it started (backends, checkpointer, WAL writer...).
        public func processIDs() throws -> [pid_t] {
            let pidFile = try String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8)
            guard let postmaster = pidFile.split(separator: "\n").first.flatMap({ pid_t($0) }) else {
                throw ServerError(description: "no pid in \(directory)/data/postmaster.pid")
            }
            var pids = [postmaster]
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
                guard let pid = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                      let close = stat.lastIndex(of: ")") else { continue }
                // After "(comm)": state, then the parent's pid.
                let fields = stat[stat.index(after: close)...].split(separator: " ")
                if fields.count > 1, pid_t(fields[1]) == postmaster { pids.append(pid) }
            }
            return pids
        }

        public func stop() {
            Server.stop(directory)
        }
    }

    /// A TCP port of 127.0.0.1 that nobody listens on now (the kernel's pick): for a test
    /// that needs an address where no server answers.
    public static func freeLoopbackPort() throws -> Int {
        try Server.freePort()
    }

    public struct ServerError: Error, CustomStringConvertible {
        public let description: String
    }

    final class Server: Sendable {
        let host: String
        let port: Int
        let user: String
        let password: String?
        let adminDatabase: String

        init(existing url: String) throws {
            guard let components = URLComponents(string: url), let host = components.host, !host.isEmpty else {
                throw ServerError(description: "CREBITOS_TEST_POSTGRES_URL='\(url)' is not a postgres://user@host:port/database URL")
            }
            self.host = host
            port = components.port ?? 5432
            user = components.user ?? "postgres"
            password = components.password
            let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            adminDatabase = path.isEmpty ? "postgres" : path
        }

        private init(port: Int) {
            host = "127.0.0.1"
            self.port = port
            user = "postgres"
            password = nil
            adminDatabase = "postgres"
        }

        func url(database: String) -> String {
            let credentials = password.map { "\(user):\($0)" } ?? user
            return "postgres://\(credentials)@\(host):\(port)/\(database)"
        }

        /// Runs one statement on the administrative database.
        func run(_ sql: String) async throws {
            let logger = Logger(label: "crebitos.test-postgres")
            let connection = try await PostgresConnection.connect(
                on: MultiThreadedEventLoopGroup.singleton.any(),
                configuration: .init(host: host, port: port, username: user, password: password, database: adminDatabase, tls: .disable),
                id: 1, logger: logger)
            do {
                try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger)
            } catch {
                try? await connection.close()
                throw ServerError(description: "\(sql) failed on \(url(database: adminDatabase)): \(String(reflecting: error))")
            }
            try await connection.close()
        }

        // MARK: The throwaway server

        /// The directories of the servers this process started, stopped and removed at exit.
        private static let started = Mutex<[String]>([])

        static func startThrowaway() throws -> Server {
            try startThrowaway(in: "/tmp/crebitos-pg-\(UUID().uuidString.prefix(8))")
        }

        static func startThrowaway(in directory: String, tls: Bool = false) throws -> Server {
            let bin = try binaries()
            // In /tmp rather than $TMPDIR: the postgres user must reach it, and the socket's
            // path must stay short.
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let asRoot = getuid() == 0
            if asRoot {
                // The server runs as `postgres`: it must own its directory, and reach it.
                try runCommand("/bin/chown", ["postgres:postgres", directory], what: "chown of \(directory) to the postgres user (is the postgresql package installed?)")
                chmod(directory, 0o700)
            }
            let first = started.withLock { started in
                started.append(directory)
                return started.count == 1
            }
            if first { atexit { Server.stopStarted() } }
            let data = directory + "/data"
            try runAsServerUser(asRoot, bin + "/initdb", [
                "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
            ], what: "initdb")
            var tlsOptions = ""
            if tls {
                try runCommand("/usr/bin/openssl", [
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", directory + "/server.key", "-out", directory + "/server.crt",
                ], what: "openssl req (a certificate for the test server)")
                chmod(directory + "/server.key", 0o600)
                if asRoot {
                    try runCommand("/bin/chown", ["postgres:postgres", directory + "/server.key", directory + "/server.crt"], what: "chown of the certificate")
                }
                tlsOptions = " -c ssl=on -c ssl_cert_file=\(directory)/server.crt -c ssl_key_file=\(directory)/server.key"
            }
            var lastFailure = ""
            for _ in 0..<5 {
                let port = try freePort()
                do {
                    try runAsServerUser(asRoot, bin + "/pg_ctl", [
                        "-D", data, "-l", directory + "/server.log", "-w", "-t", "60",
                        "-o", "-c listen_addresses=127.0.0.1 -p \(port) -k \(directory) -c fsync=on -c max_connections=300" + tlsOptions,
                        "start",
                    ], what: "pg_ctl start")
                    return Server(port: port)
                } catch {
                    // Most likely someone took the port between our check and the start.
                    lastFailure = "\(error)\n" + ((try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? "")
                }
            }
            throw ServerError(description: "PostgreSQL did not start: \(lastFailure)")
        }

        static func stopStarted() {
            for directory in started.withLock({ $0 }) { stop(directory) }
        }

        static func stop(_ directory: String) {
            if let bin = try? binaries() {
                try? runAsServerUser(getuid() == 0, bin + "/pg_ctl", ["-D", directory + "/data", "-m", "immediate", "-w", "stop"], what: "pg_ctl stop")
            }
            try? FileManager.default.removeItem(atPath: directory)
        }

        /// Debian's PostgreSQL binaries, the newest version installed.
        static func binaries() throws -> String {
            let root = "/usr/lib/postgresql"
            let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
                .compactMap { Int($0) }.sorted()
            for version in versions.reversed() where FileManager.default.isExecutableFile(atPath: "\(root)/\(version)/bin/initdb") {
                return "\(root)/\(version)/bin"
            }
            throw ServerError(description: "no PostgreSQL server binaries in \(root)/*/bin (install the postgresql package: apt-get install postgresql), and CREBITOS_TEST_POSTGRES_URL is not set")
        }

        private static func runAsServerUser(_ asRoot: Bool, _ executable: String, _ arguments: [String], what: String) throws {
            if asRoot {
                try runCommand("/usr/sbin/runuser", ["-u", "postgres", "--", executable] + arguments, what: what)
            } else {
                try runCommand(executable, arguments, what: what)
            }
        }

        /// Runs a command to its end, with posix_spawn and waitpid rather than Foundation's
        /// Process, whose wait never returned after `pg_ctl start` (the server it leaves
        /// behind keeps what Process watches open). The output goes to a file.
        private static func runCommand(_ executable: String, _ arguments: [String], what: String) throws {
            let outputPath = "/tmp/crebitos-pg-command-\(UUID().uuidString).log"
            defer { unlink(outputPath) }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
            let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
            defer { for pointer in argv { free(pointer) } }
            var pid = pid_t()
            let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environ)
            guard spawned == 0 else {
                throw ServerError(description: "\(what): cannot run \(executable): \(String(cString: strerror(spawned)))")
            }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 {
                guard errno == EINTR else { throw ServerError(description: "\(what): waitpid failed") }
            }
            let exited = status & 0x7F == 0
            let code = (status >> 8) & 0xFF
            guard exited, code == 0 else {
                let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
                throw ServerError(description: "\(what) failed (status \(status)): \(text)")
            }
        }

        /// A TCP port of 127.0.0.1 that nobody listens on now (the kernel's pick).
        static func freePort() throws -> Int {
            let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard socket >= 0 else { throw ServerError(description: "socket() failed") }
            defer { close(socket) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = 0
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                    bind(socket, generic, length) == 0 && getsockname(socket, generic, &length) == 0
                }
            }
            guard bound else { throw ServerError(description: "could not find a free port") }
            return Int(UInt16(bigEndian: address.sin_port))
        }
    }
}
