import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A plain TCP connection for the tests that need bytes no HTTP client sends: broken
/// HTTP, a body trickled byte by byte, a connection left idle.
final class RawConnection {
    private let socket: Int32

    init(port: Int) throws {
        socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(socket) }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Ends the sending side (the server reads EOF), keeping the receiving side open.
    func shutdownWrite() {
        shutdown(socket, Int32(SHUT_WR))
    }

    /// Sends `text` over and over without reading anything back, until the socket would
    /// block (the server stopped reading) or `limit` bytes went out or `seconds` passed.
    /// Returns the bytes sent and whether the socket would block.
    func flood(_ text: String, limit: Int, seconds: Double) -> (sent: Int, blocked: Bool) {
        let chunk = Array(String(repeating: text, count: max(1, 16_384 / max(1, text.utf8.count))).utf8)
        let flags = fcntl(socket, F_GETFL)
        _ = fcntl(socket, F_SETFL, flags | O_NONBLOCK)
        defer { _ = fcntl(socket, F_SETFL, flags) }
        let deadline = Date().addingTimeInterval(seconds)
        var sent = 0
        var wouldBlockSince: Date?
        while sent < limit, Date() < deadline {
            let count = chunk.withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count > 0 {
                sent += count
                wouldBlockSince = nil
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                // Blocked for a whole second: the server is not reading.
                if let since = wouldBlockSince, Date().timeIntervalSince(since) > 1 { return (sent, true) }
                wouldBlockSince = wouldBlockSince ?? Date()
                usleep(10_000)
            } else {
                break
            }
        }
        return (sent, false)
    }

    /// Whether the last ``readUntilClosed()`` ended because the server closed the
    /// connection (rather than after 10 s without a byte).
    private(set) var closedByServer = false

    /// Everything the server sends until it closes the connection (or 10 s pass without
    /// a byte: then ``closedByServer`` is false).
    func readUntilClosed() -> String {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(socket, &chunk, chunk.count, 0)
            // An orderly close, or a reset (a socket closed with bytes it never read).
            if count == 0 || (count < 0 && errno == ECONNRESET) { closedByServer = true }
            if count <= 0 { break }
            received += chunk[..<count]
        }
        return String(decoding: received, as: UTF8.self)
    }
}
