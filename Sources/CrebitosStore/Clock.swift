#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Nanoseconds on a clock that never steps (CLOCK_MONOTONIC): deadlines are measured on
/// it, so setting the wall clock can neither expire nor extend a waiting write.
enum MonotonicClock {
    static func nowNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return 0 }
        return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }
}

/// The `realizada_em` of each batch: the wall clock, except that it never goes backwards
/// within a process. When NTP steps the clock back, a later transaction would otherwise
/// carry an earlier time than the one before it, and a statement (newest first, by commit
/// order) would show times out of order. Used only by the writer thread.
final class CommitTimestamps: @unchecked Sendable {
    private let wallClock: @Sendable () -> Int64
    private var last = Int64.min

    init(wallClock: @escaping @Sendable () -> Int64) {
        self.wallClock = wallClock
    }

    func next() -> Int64 {
        last = max(last == .min ? .min : last + 1, wallClock())
        return last
    }
}
