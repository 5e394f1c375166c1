import CrebitosLedger
import NIOHTTP1

/// When a request entered the system, from the `X-Request-Start` header the load balancer
/// adds (nginx: `proxy_set_header X-Request-Start "t=${msec}"`, the convention of load
/// balancers and APM tools): `t=` and the Unix time in seconds (with a fraction, as nginx's
/// `$msec` gives it), milliseconds or microseconds, told apart by magnitude.
///
/// Why: a write's deadline must start where the request entered, not where this process
/// read it. A frozen process resumes with requests unread in its socket that nginx has
/// already answered 504; measured from their reading they would look fresh and be written.
/// Measured from nginx's stamp they are past their deadline and refused.
///
/// The stamp and this process's clock must agree: on one host they are the same clock; across
/// hosts their skew adds to or takes from the deadline (NTP keeps it to milliseconds). A stamp
/// from the future counts as no wait at all, so a fast clock on the balancer cannot refuse
/// writes; a client can only make its own request wait less, never another's.
enum RequestStart {
    /// How long ago the request entered the system, or nil when it carries no usable stamp
    /// (it did not come through the load balancer): a write's deadline then counts from its
    /// reading, and the queueing metric leaves it out.
    static func waitedIfStamped(_ headers: HTTPHeaders, nowMicroseconds: Int64 = WallClock.nowMicroseconds()) -> Duration? {
        guard let value = headers.first(name: "x-request-start"), let stamp = microseconds(value) else { return nil }
        let waited = nowMicroseconds - stamp
        return waited > 0 ? .microseconds(waited) : .zero
    }

    /// `t=1733222400.123` (seconds), `t=1733222400123` (ms) or `t=1733222400123456` (µs),
    /// `t=` optional; nil for anything else.
    static func microseconds(_ value: String) -> Int64? {
        var text = Substring(value).drop { $0 == " " }
        if text.hasPrefix("t=") { text = text.dropFirst(2) }
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty, whole.count <= 16, whole.allSatisfy(\.isASCIIDigit),
              let integer = Int64(whole)
        else { return nil }
        var fraction: Int64 = 0
        if parts.count == 2 {
            let digits = parts[1]
            guard !digits.isEmpty, digits.allSatisfy(\.isASCIIDigit) else { return nil }
            let micro = digits.prefix(6) + String(repeating: "0", count: max(0, 6 - digits.count))
            fraction = Int64(micro) ?? 0
        }
        switch integer {
        case ..<100_000_000_000: return integer * 1_000_000 + fraction  // seconds (until the year 5138)
        case ..<100_000_000_000_000: return parts.count == 2 ? nil : integer * 1_000  // milliseconds
        default: return parts.count == 2 ? nil : integer  // microseconds
        }
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
