import NIOCore

/// Formats `realizada_em` and `data_extrato`: ISO 8601, UTC, microseconds, e.g.
/// `2024-01-17T02:34:41.217753Z`. Done by arithmetic rather than a date formatter: it
/// runs for every entry of every statement, and the UTC calendar needs no time zone data.
enum Timestamp {
    static func iso8601(microseconds: Int64) -> String {
        var buffer = ByteBufferAllocator().buffer(capacity: 27)
        writeISO8601(microseconds: microseconds, into: &buffer)
        return buffer.readString(length: buffer.readableBytes) ?? ""
    }

    static func writeISO8601(microseconds: Int64, into buffer: inout ByteBuffer) {
        let (seconds, fraction) = floorDivision(microseconds, 1_000_000)
        let (days, secondOfDay) = floorDivision(seconds, 86_400)
        let (year, month, day) = civilDate(daysSinceEpoch: days)
        if (0...9999).contains(year) {
            write(year, digits: 4, into: &buffer)
        } else {
            // Only a hand-edited row gets here (every stored time is a real clock's): ISO 8601's
            // expanded years, `-000001` or `+012345`, rather than a crash or a wrong year.
            buffer.writeInteger(UInt8(ascii: year < 0 ? "-" : "+"))
            write(year.magnitude, digits: 6, into: &buffer)
        }
        buffer.writeInteger(UInt8(ascii: "-"))
        write(month, digits: 2, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "-"))
        write(day, digits: 2, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "T"))
        write(secondOfDay / 3600, digits: 2, into: &buffer)
        buffer.writeInteger(UInt8(ascii: ":"))
        write(secondOfDay % 3600 / 60, digits: 2, into: &buffer)
        buffer.writeInteger(UInt8(ascii: ":"))
        write(secondOfDay % 60, digits: 2, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "."))
        write(fraction, digits: 6, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "Z"))
    }

    /// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
    /// `civil_from_days`, http://howardhinnant.github.io/date_algorithms.html).
    static func civilDate(daysSinceEpoch days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }

    private static func floorDivision(_ value: Int64, _ divisor: Int64) -> (Int64, Int64) {
        let quotient = value / divisor
        let remainder = value % divisor
        return remainder < 0 ? (quotient - 1, remainder + divisor) : (quotient, remainder)
    }

    private static func write(_ value: Int64, digits: Int, into buffer: inout ByteBuffer) {
        write(UInt64(value), digits: digits, into: &buffer)
    }

    /// `value` in at least `digits` decimal digits (more when it needs them).
    private static func write(_ value: UInt64, digits: Int, into buffer: inout ByteBuffer) {
        var divisor: UInt64 = 1
        for _ in 1..<digits { divisor *= 10 }
        while value / divisor >= 10 { divisor *= 10 }
        var remaining = value
        while divisor > 0 {
            buffer.writeInteger(UInt8(ascii: "0") + UInt8(remaining / divisor % 10))
            remaining %= divisor
            divisor /= 10
        }
    }
}
