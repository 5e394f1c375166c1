#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The wall clock every layer reads: `realizada_em` (both stores) and the age of nginx's
/// `X-Request-Start` stamp (the HTTP layer) are both microseconds since the Unix epoch, UTC.
public enum WallClock {
    @Sendable
    public static func nowMicroseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1_000_000 + Int64(time.tv_nsec) / 1_000
    }
}
