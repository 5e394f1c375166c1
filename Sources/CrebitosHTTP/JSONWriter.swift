import NIOCore

/// Writes the API's small, fixed-shape JSON responses straight into a `ByteBuffer`.
struct JSONWriter {
    private(set) var buffer: ByteBuffer

    init(capacity: Int = 256) {
        buffer = ByteBufferAllocator().buffer(capacity: capacity)
    }

    mutating func raw(_ text: StaticString) {
        buffer.writeStaticString(text)
    }

    mutating func integer(_ value: Int64) {
        buffer.writeString(String(value))
    }

    /// A JSON string literal, escaping what RFC 8259 requires.
    mutating func string(_ value: String) {
        buffer.writeInteger(UInt8(ascii: "\""))
        for byte in value.utf8 {
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
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    /// An ISO 8601 UTC timestamp with microseconds, quoted: "2024-01-17T02:34:41.217753Z".
    mutating func timestamp(microseconds: Int64) {
        buffer.writeInteger(UInt8(ascii: "\""))
        Timestamp.writeISO8601(microseconds: microseconds, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}
