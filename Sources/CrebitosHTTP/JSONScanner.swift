/// A strict JSON reader for request bodies, made for one job: read the top-level object
/// of a transaction request and hand each member to the caller, refusing anything that
/// is not RFC 8259 JSON.
///
/// Why not `JSONDecoder`? It cannot tell `1` from `1.0` or `1e0` (all decode as `Int`),
/// silently keeps one of two duplicated keys, and reports syntax errors and type errors
/// alike, while the contract needs each told apart (400 for "not JSON", 422 for "JSON
/// but not a valid transaction"). Reading the bytes directly also avoids a Foundation
/// round trip on the hot path. The decoder is covered by hand-written cases and by a
/// property test that feeds it random and mutated documents (Tests/CrebitosHTTPTests).
struct JSONScanner {
    /// A member value of the top-level object, reduced to what validation needs.
    enum Value: Equatable {
        case null
        case bool(Bool)
        /// An integer literal (no fraction, no exponent); nil when outside Int64.
        case integer(Int64?)
        /// A number with a fraction or an exponent, such as `1.2`, `1.0` or `1e3`.
        case nonIntegerNumber
        case string(String)
        case array
        case object
    }

    struct SyntaxError: Error, Equatable {
        let message: String
        let offset: Int
    }

    /// Deeper nesting than this is refused: no transaction needs it, and unbounded
    /// recursion on attacker-controlled input would be a way to crash the process.
    static let maximumDepth = 32

    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// Reads the whole document. Returns nil when it is valid JSON whose top level is
    /// not an object; calls `member` for each top-level member otherwise.
    mutating func readTopLevelObject(_ member: (String, Value) throws -> Void) throws -> Bool {
        skipWhitespace()
        let isObject = peek() == UInt8(ascii: "{")
        if isObject {
            index += 1
            try readMembers(depth: 1, member)
        } else {
            _ = try readValue(depth: 0)
        }
        skipWhitespace()
        guard index == bytes.count else { throw error("unexpected data after the JSON document") }
        return isObject
    }

    // MARK: - Grammar

    private mutating func readMembers(depth: Int, _ member: (String, Value) throws -> Void) throws {
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            index += 1
            return
        }
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let key = try readString()
            skipWhitespace()
            try expect(UInt8(ascii: ":"), "expected ':' after a key")
            let value = try readValue(depth: depth)
            try member(key, value)
            skipWhitespace()
            switch next() {
            case UInt8(ascii: ","): continue
            case UInt8(ascii: "}"): return
            default: throw error("expected ',' or '}' in an object")
            }
        }
    }

    private mutating func readElements(depth: Int) throws {
        skipWhitespace()
        if peek() == UInt8(ascii: "]") {
            index += 1
            return
        }
        while true {
            _ = try readValue(depth: depth)
            skipWhitespace()
            switch next() {
            case UInt8(ascii: ","): continue
            case UInt8(ascii: "]"): return
            default: throw error("expected ',' or ']' in an array")
            }
        }
    }

    private mutating func readValue(depth: Int) throws -> Value {
        skipWhitespace()
        guard let byte = peek() else { throw error("unexpected end of the JSON document") }
        switch byte {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            guard depth < Self.maximumDepth else {
                throw error("JSON nested deeper than \(Self.maximumDepth) levels")
            }
            index += 1
            if byte == UInt8(ascii: "{") {
                try readMembers(depth: depth + 1) { _, _ in }
                return .object
            }
            try readElements(depth: depth + 1)
            return .array
        case UInt8(ascii: "\""):
            return .string(try readString())
        case UInt8(ascii: "t"):
            try expectLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try expectLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try expectLiteral("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return try readNumber()
        default:
            throw error("unexpected character in a JSON value")
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    private mutating func readNumber() throws -> Value {
        let isNegative = peek() == UInt8(ascii: "-")
        if isNegative { index += 1 }
        guard let first = peek(), isDigit(first) else { throw error("expected a digit") }
        // Accumulate as a negative number so that Int64.min is representable.
        var magnitude: Int64? = 0
        if first == UInt8(ascii: "0") {
            index += 1
            if let after = peek(), isDigit(after) { throw error("numbers must not have leading zeros") }
        } else {
            while let digit = peek(), isDigit(digit) {
                index += 1
                if let current = magnitude {
                    let (times10, overflow1) = current.multipliedReportingOverflow(by: 10)
                    let (next, overflow2) = times10.subtractingReportingOverflow(Int64(digit - UInt8(ascii: "0")))
                    magnitude = overflow1 || overflow2 ? nil : next
                }
            }
        }
        var isInteger = true
        if peek() == UInt8(ascii: ".") {
            index += 1
            try readDigits("expected a digit after '.'")
            isInteger = false
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            index += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { index += 1 }
            try readDigits("expected a digit in the exponent")
            isInteger = false
        }
        guard isInteger else { return .nonIntegerNumber }
        guard let negated = magnitude else { return .integer(nil) }
        if isNegative { return .integer(negated) }
        return .integer(negated == .min ? nil : -negated)
    }

    private mutating func readDigits(_ message: String) throws {
        guard let first = peek(), isDigit(first) else { throw error(message) }
        while let digit = peek(), isDigit(digit) { index += 1 }
    }

    /// Reads a string starting at its opening quote; validates UTF-8 and escapes.
    private mutating func readString() throws -> String {
        index += 1  // opening quote
        let start = index
        // Fast path: no escapes, the bytes are the string.
        while let byte = peek(), byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\") {
            guard byte >= 0x20 else { throw error("control character inside a string must be escaped") }
            index += 1
        }
        guard let stop = peek() else { throw error("unterminated string") }
        if stop == UInt8(ascii: "\"") {
            index += 1
            return try utf8String(bytes[start..<(index - 1)])
        }
        var decoded = Array(bytes[start..<index])
        while true {
            guard let byte = next() else { throw error("unterminated string") }
            switch byte {
            case UInt8(ascii: "\""):
                return try utf8String(decoded[...])
            case UInt8(ascii: "\\"):
                try readEscape(into: &decoded)
            case 0..<0x20:
                throw error("control character inside a string must be escaped")
            default:
                decoded.append(byte)
            }
        }
    }

    private mutating func readEscape(into decoded: inout [UInt8]) throws {
        guard let escaped = next() else { throw error("unterminated escape") }
        switch escaped {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): decoded.append(escaped)
        case UInt8(ascii: "b"): decoded.append(0x08)
        case UInt8(ascii: "f"): decoded.append(0x0C)
        case UInt8(ascii: "n"): decoded.append(0x0A)
        case UInt8(ascii: "r"): decoded.append(0x0D)
        case UInt8(ascii: "t"): decoded.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = try readHex4()
            if (0xD800...0xDBFF).contains(scalar) {
                // A high surrogate must be followed by an escaped low surrogate.
                guard next() == UInt8(ascii: "\\"), next() == UInt8(ascii: "u") else {
                    throw error("unpaired surrogate in a \\u escape")
                }
                let low = try readHex4()
                guard (0xDC00...0xDFFF).contains(low) else { throw error("unpaired surrogate in a \\u escape") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00...0xDFFF).contains(scalar) {
                throw error("unpaired surrogate in a \\u escape")
            }
            guard let unicodeScalar = Unicode.Scalar(scalar) else { throw error("invalid \\u escape") }
            decoded.append(contentsOf: Array(String(Character(unicodeScalar)).utf8))
        default:
            throw error("invalid escape sequence")
        }
    }

    private mutating func readHex4() throws -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let byte = next() else { throw error("unterminated \\u escape") }
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw error("invalid hex digit in a \\u escape")
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    private func utf8String(_ slice: ArraySlice<UInt8>) throws -> String {
        guard let string = String(validating: slice, as: UTF8.self) else { throw error("invalid UTF-8 in a string") }
        return string
    }

    // MARK: - Bytes

    private func peek() -> UInt8? {
        index < bytes.count ? bytes[index] : nil
    }

    private mutating func next() -> UInt8? {
        guard index < bytes.count else { return nil }
        defer { index += 1 }
        return bytes[index]
    }

    private mutating func skipWhitespace() {
        while let byte = peek(),
              byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\t")
        {
            index += 1
        }
    }

    private mutating func expect(_ byte: UInt8, _ message: String) throws {
        guard next() == byte else { throw error(message) }
    }

    private mutating func expectLiteral(_ literal: StaticString) throws {
        let utf8 = UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
        for byte in utf8 where next() != byte {
            throw error("invalid literal")
        }
    }

    private func isDigit(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
    }

    private func error(_ message: String) -> SyntaxError {
        SyntaxError(message: message, offset: index)
    }
}
