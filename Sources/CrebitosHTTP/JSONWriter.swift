import NIOCore

/// Writes the API's small, fixed-shape JSON documents straight into a `ByteBuffer`.
struct JSONWriter {
    private(set) var buffer: ByteBuffer

    init(buffer: ByteBuffer) {
        self.buffer = buffer
    }

    init(capacity: Int = 256) {
        buffer = ByteBufferAllocator().buffer(capacity: capacity)
    }

    mutating func raw(_ text: StaticString) {
        buffer.writeStaticString(text)
    }

    /// A decimal integer, digit by digit (no intermediate `String`).
    mutating func integer(_ value: Int64) {
        if value < 0 { buffer.writeInteger(UInt8(ascii: "-")) }
        // The magnitude as unsigned, so that Int64.min is written correctly.
        var magnitude = value.magnitude
        var digits: (UInt64, UInt64) = (0, 0)  // 20 digits at most: room for 32 bytes
        withUnsafeMutableBytes(of: &digits) { scratch in
            var start = scratch.count
            repeat {
                start -= 1
                scratch[start] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: scratch[start...]))
        }
    }

    /// A JSON string literal, escaping what RFC 8259 requires.
    mutating func string(_ value: String) {
        buffer.writeInteger(UInt8(ascii: "\""))
        if value.utf8.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
            buffer.writeString(value)  // the common case: nothing to escape
        } else {
            for byte in value.utf8 { writeEscaping(byte) }
        }
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    private mutating func writeEscaping(_ byte: UInt8) {
        switch byte {
        case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
        case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
        case UInt8(ascii: "\n"): buffer.writeStaticString("\\n")
        case UInt8(ascii: "\r"): buffer.writeStaticString("\\r")
        case UInt8(ascii: "\t"): buffer.writeStaticString("\\t")
        case 0..<0x20:
            buffer.writeStaticString("\\u00")
            buffer.writeInteger(Self.hexDigits[Int(byte >> 4)])
            buffer.writeInteger(Self.hexDigits[Int(byte & 0xF)])
        default: buffer.writeInteger(byte)
        }
    }

    /// An ISO 8601 UTC timestamp with microseconds, quoted: "2024-01-17T02:34:41.217753Z".
    mutating func timestamp(microseconds: Int64) {
        buffer.writeInteger(UInt8(ascii: "\""))
        Timestamp.writeISO8601(microseconds: microseconds, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}
