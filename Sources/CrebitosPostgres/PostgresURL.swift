import PostgresNIO

/// Where a PostgreSQL server is and how to log in: `postgres://user:password@host:port/database`
/// (or `postgresql://`). Parsed once, at start, by the settings; a URL this type refuses
/// stops the process with ``ParseError/description`` naming what is wrong.
///
/// - `host` is a name or an IPv4 address, or `[v6]`; a Unix socket directory may be given
///   instead as `?host=/run/postgresql` (libpq's convention), with the host part empty.
/// - `port` defaults to 5432, `user` to `postgres`, `database` to the user's name.
/// - `user` and `password` may be percent-encoded.
/// - `sslmode` is libpq's: `disable` (the default here, unlike libpq's `prefer`: no
///   TLS unless asked for), `prefer`, `require` (encrypted, the certificate not checked),
///   `verify-ca` (signed by a trusted CA) or `verify-full` (and issued for the host name).
///   `sslrootcert=/path/ca.pem` names the CA certificates to trust instead of the system's.
///   Over a Unix socket there is no TLS, and `sslmode` is ignored, as libpq does.
/// - Any other query parameter is refused rather than silently ignored.
public struct PostgresURL: Sendable, Hashable, CustomStringConvertible {
    public enum Endpoint: Sendable, Hashable {
        case tcp(host: String, port: Int)
        /// The directory holding the server's socket (`.s.PGSQL.<port>`).
        case unixSocket(directory: String, port: Int)
    }

    /// libpq's `sslmode` values.
    public enum TLSMode: String, Sendable, Hashable, CaseIterable {
        case disable, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    public let endpoint: Endpoint
    public let tlsMode: TLSMode
    /// `sslrootcert`: a PEM file of the CA certificates to trust (verify-ca, verify-full).
    public let tlsRootCertificates: String?
    public let user: String
    public let password: String?
    public let database: String

    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    public init(_ text: String) throws(ParseError) {
        func fail(_ why: String) -> ParseError { ParseError(description: why) }
        let lower = text.lowercased()
        let rest: Substring
        if lower.hasPrefix("postgres://") {
            rest = text.dropFirst("postgres://".count)
        } else if lower.hasPrefix("postgresql://") {
            rest = text.dropFirst("postgresql://".count)
        } else {
            throw fail("must start with postgres:// or postgresql://")
        }
        var main = rest
        var query: Substring = ""
        if let mark = rest.firstIndex(of: "?") {
            main = rest[..<mark]
            query = rest[rest.index(after: mark)...]
        }
        var authority = main
        var path: Substring = ""
        if let slash = main.firstIndex(of: "/") {
            authority = main[..<slash]
            path = main[main.index(after: slash)...]
        }
        var userInfo: Substring?
        var hostPort = authority
        if let at = authority.lastIndex(of: "@") {
            userInfo = authority[..<at]
            hostPort = authority[authority.index(after: at)...]
        }
        var user = "postgres"
        var password: String?
        if let userInfo {
            let parts = userInfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard let decodedUser = Self.percentDecoded(parts[0]), !decodedUser.isEmpty else {
                throw fail("the user name is empty or badly percent-encoded")
            }
            user = decodedUser
            if parts.count == 2 {
                guard let decoded = Self.percentDecoded(parts[1]) else { throw fail("the password is badly percent-encoded") }
                password = decoded
            }
        }
        var host = ""
        var port = 5432
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else { throw fail("an IPv6 host must be closed with ]") }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let number = Int(after.dropFirst()) else { throw fail("the port must be a number") }
                port = number
            }
        } else if let colon = hostPort.lastIndex(of: ":") {
            host = String(hostPort[..<colon])
            guard let number = Int(hostPort[hostPort.index(after: colon)...]) else { throw fail("the port must be a number") }
            port = number
        } else {
            host = String(hostPort)
        }
        guard (1...65_535).contains(port) else { throw fail("the port must be from 1 to 65535") }
        var socketDirectory: String?
        var tlsMode = TLSMode.disable
        var rootCertificates: String?
        for item in query.split(separator: "&") where !item.isEmpty {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(pair[0])
            let value = pair.count == 2 ? Self.percentDecoded(pair[1]) : nil
            switch (name, value) {
            case ("host", let directory?) where directory.hasPrefix("/"):
                socketDirectory = directory
            case ("sslmode", let mode?) where TLSMode(rawValue: mode) != nil:
                tlsMode = TLSMode(rawValue: mode)!
            case ("sslmode", _):
                throw fail("sslmode must be one of \(TLSMode.allCases.map(\.rawValue).joined(separator: ", "))")
            case ("sslrootcert", let path?) where !path.isEmpty:
                rootCertificates = path
            default:
                throw fail("unknown parameter '\(name)' (only host=/socket/dir, sslmode and sslrootcert are understood)")
            }
        }
        if let socketDirectory {
            guard host.isEmpty else { throw fail("give either a host or ?host=/socket/dir, not both") }
            endpoint = .unixSocket(directory: socketDirectory, port: port)
        } else {
            guard !host.isEmpty else { throw fail("the host is missing") }
            endpoint = .tcp(host: host, port: port)
        }
        guard let database = Self.percentDecoded(path) else { throw fail("the database name is badly percent-encoded") }
        guard !database.contains("/") else { throw fail("the database name must not contain /") }
        self.tlsMode = tlsMode
        self.tlsRootCertificates = rootCertificates
        self.user = user
        self.password = password
        self.database = database.isEmpty ? user : database
    }

    /// The URL without its password, for logs.
    public var description: String {
        let credentials = password == nil ? user : "\(user):***"
        switch endpoint {
        case .tcp(let host, let port):
            let shownHost = host.contains(":") ? "[\(host)]" : host
            var parameters: [String] = []
            if tlsMode != .disable { parameters.append("sslmode=\(tlsMode.rawValue)") }
            if let tlsRootCertificates { parameters.append("sslrootcert=\(tlsRootCertificates)") }
            let query = parameters.isEmpty ? "" : "?" + parameters.joined(separator: "&")
            return "postgres://\(credentials)@\(shownHost):\(port)/\(database)\(query)"
        case .unixSocket(let directory, let port):
            return "postgres://\(credentials)@:\(port)/\(database)?host=\(directory)"
        }
    }

    private static func percentDecoded(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension PostgresURL {
    /// The TLS settings `sslmode` and `sslrootcert` ask for, for the pool and for a single
    /// connection (postgres-nio has a type for each).
    func tlsConfiguration() throws -> (pool: PostgresClient.Configuration.TLS, connection: PostgresConnection.Configuration.TLS) {
        var tls = TLSConfiguration.makeClientConfiguration()
        switch tlsMode {
        case .disable:
            return (.disable, .disable)
        case .prefer, .require:
            tls.certificateVerification = .none
        case .verifyCA:
            tls.certificateVerification = .noHostnameVerification
        case .verifyFull:
            tls.certificateVerification = .fullVerification
        }
        if let tlsRootCertificates {
            tls.trustRoots = .file(tlsRootCertificates)
        }
        if tlsMode == .prefer {
            return (.prefer(tls), .prefer(try NIOSSLContext(configuration: tls)))
        }
        return (.require(tls), .require(try NIOSSLContext(configuration: tls)))
    }
}
