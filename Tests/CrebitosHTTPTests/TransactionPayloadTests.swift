@testable import CrebitosHTTP
import CrebitosLedger
import Foundation
import XCTest

final class TransactionPayloadTests: XCTestCase {
    private func decode(_ text: String) throws(TransactionPayload.DecodingError) -> TransactionRequest {
        try TransactionPayload.decode(Array(text.utf8))
    }

    func testDecodesTheChallengesPayload() throws {
        let request = try decode(#"{"valor": 1000, "tipo": "c", "descricao": "descricao"}"#)
        XCTAssertEqual(request, try TransactionRequest(amount: 1000, kind: .credit, description: "descricao"))
        XCTAssertEqual(try decode(" \n{\"descricao\":\"x\",\"tipo\":\"d\",\"valor\":7}\t "),
                       try TransactionRequest(amount: 7, kind: .debit, description: "x"))
    }

    func testNumbersAtTheSixtyFourBitLimits() {
        XCTAssertEqual(try? decode(#"{"valor": 9007199254740991, "tipo": "c", "descricao": "max"}"#).amount, 9_007_199_254_740_991)
        for (literal, error) in [
            ("9223372036854775807", TransactionValidationError.amountTooLarge),
            ("9223372036854775808", .amountTooLarge),
            ("-9223372036854775808", .amountNotPositive),
            ("-9223372036854775809", .amountTooLarge),
            ("-0", .amountNotPositive),
            ("1.5e3", .amountNotAnInteger),
            ("10E-1", .amountNotAnInteger),
        ] {
            XCTAssertThrowsError(try decode(#"{"valor": \#(literal), "tipo": "c", "descricao": "x"}"#), literal) {
                XCTAssertEqual($0 as? TransactionPayload.DecodingError, .invalid(error), literal)
            }
        }
    }

    func testNumbersBeyondADoubleAreStillJSON() {
        // Valid JSON grammar, whatever a double can hold: an ignored member is ignored, and
        // in valor it is SPEC.md's "a number too large to store" (422, not 400).
        XCTAssertNoThrow(try decode(#"{"x": -9.5e39223372036854775808, "valor": 1, "tipo": "c", "descricao": "x"}"#))
        XCTAssertThrowsError(try decode(#"{"valor": 1e400, "tipo": "c", "descricao": "x"}"#)) {
            XCTAssertEqual($0 as? TransactionPayload.DecodingError, .invalid(.amountNotAnInteger))
        }
        XCTAssertThrowsError(try decode(#"{"valor": \#(String(repeating: "9", count: 400)), "tipo": "c", "descricao": "x"}"#)) {
            XCTAssertEqual($0 as? TransactionPayload.DecodingError, .invalid(.amountTooLarge))
        }
    }

    func testTimestampsAreISO8601WithMicroseconds() {
        XCTAssertEqual(Timestamp.iso8601(microseconds: 0), "1970-01-01T00:00:00.000000Z")
        XCTAssertEqual(Timestamp.iso8601(microseconds: 1_705_458_881_217_753), "2024-01-17T02:34:41.217753Z")
        XCTAssertEqual(Timestamp.iso8601(microseconds: 951_782_400_000_001), "2000-02-29T00:00:00.000001Z")
        XCTAssertEqual(Timestamp.iso8601(microseconds: -1), "1969-12-31T23:59:59.999999Z")
        // Agrees with Foundation across a range of dates.
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        for seconds in stride(from: Int64(0), to: 4_102_444_800, by: 7_776_013) {
            let expected = formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
            XCTAssertEqual(Timestamp.iso8601(microseconds: seconds * 1_000_000), expected.replacingOccurrences(of: "Z", with: ".000000Z"))
        }
    }

    /// A hand-edited realizada_em outside years 0-9999 (negative, or far in the future) gets
    /// ISO 8601's expanded year instead of trapping the process, which took every statement of
    /// that client down with it.
    func testTimestampsOutsideFourDigitYearsAreExpandedNotACrash() {
        XCTAssertEqual(Timestamp.iso8601(microseconds: -62_167_219_200_000_001), "-000001-12-31T23:59:59.999999Z")
        XCTAssertEqual(Timestamp.iso8601(microseconds: 253_402_300_800_000_000), "+010000-01-01T00:00:00.000000Z")
        XCTAssertEqual(Timestamp.iso8601(microseconds: .min), "-290308-12-21T19:59:05.224192Z")
        XCTAssertEqual(Timestamp.iso8601(microseconds: .max), "+294247-01-10T04:00:54.775807Z")
    }

    /// Property: any transaction, written as JSON with random whitespace, member order,
    /// extra members and escapes, decodes to itself.
    func testRandomValidDocumentsDecodeExactly() throws {
        var random = SeededGenerator(seed: 0x5EED_2024)
        for _ in 0..<2_000 {
            let amount = Int64.random(in: 1...TransactionRequest.maximumAmount, using: &random)
            let kind = TransactionKind.allCases.randomElement(using: &random)!
            let description = randomDescription(using: &random)
            let expected = try TransactionRequest(amount: amount, kind: kind, description: description)
            var members = [
                "\"valor\":\(ws(&random))\(amount)",
                "\"tipo\":\(ws(&random))\"\(kind.rawValue)\"",
                "\"descricao\":\(ws(&random))\(jsonString(description, escapingAll: Bool.random(using: &random)))",
            ]
            if Bool.random(using: &random) { members.append("\"extra\":\(ws(&random))[1,{\"a\":null},\"b\",2.5e-3,false]") }
            members.shuffle(using: &random)
            let document = "\(ws(&random)){\(ws(&random))" + members.joined(separator: "\(ws(&random)),\(ws(&random))") + "\(ws(&random))}\(ws(&random))"
            XCTAssertEqual(try decode(document), expected, document)
        }
    }

    /// Property: random mutations of a valid document never crash the decoder, and
    /// whatever it accepts, Foundation's parser reads as the same transaction (our
    /// decoder is never more permissive than a standard parser).
    func testMutatedDocumentsAreNeverAcceptedWrongly() throws {
        var random = SeededGenerator(seed: 0xBAD_1DEA)
        let seeds = [
            #"{"valor": 1000, "tipo": "c", "descricao": "descricao"}"#,
            #"{"valor":1,"tipo":"d","descricao":"a\u00e7\"o","x":[{"y":[]}]}"#,
        ].map { Array($0.utf8) }
        let alphabet = Array(#"{}[]":,.-+eE0123456789 \"tfnul\#u{0}\#u{7f}"#.utf8) + [0xC3, 0xA7, 0xFF, 0x80]
        var accepted = 0
        for _ in 0..<20_000 {
            var bytes = seeds.randomElement(using: &random)!
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let position = Int.random(in: 0...bytes.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0 where position < bytes.count: bytes.remove(at: position)
                case 1: bytes.insert(alphabet.randomElement(using: &random)!, at: position)
                default: if position < bytes.count { bytes[position] = alphabet.randomElement(using: &random)! }
                }
            }
            guard let request = try? TransactionPayload.decode(bytes) else { continue }
            accepted += 1
            let object = try XCTUnwrap(
                try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
                "accepted but Foundation disagrees: \(String(decoding: bytes, as: UTF8.self))")
            XCTAssertEqual((object["valor"] as? NSNumber)?.int64Value, request.amount)
            XCTAssertEqual(object["tipo"] as? String, request.kind.rawValue)
            XCTAssertEqual(object["descricao"] as? String, request.description)
        }
        XCTAssertGreaterThan(accepted, 100, "the mutations should leave some documents valid")
    }

    private func ws(_ random: inout SeededGenerator) -> String {
        ["", "", " ", "\n", "\t", "  \r\n "].randomElement(using: &random)!
    }

    private func randomDescription(using random: inout SeededGenerator) -> String {
        let pool: [Unicode.Scalar] = ["a", "Z", "9", " ", "\"", "\\", "/", "ç", "ã", "€", "😀", "中"]
        let length = Int.random(in: 1...10, using: &random)
        var text = ""
        for _ in 0..<length { text.unicodeScalars.append(pool.randomElement(using: &random)!) }
        return text
    }

    private func jsonString(_ text: String, escapingAll: Bool) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where escapingAll:
                for unit in String(scalar).utf16 { out += String(format: "\\u%04x", unit) }
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// SplitMix64: reproducible randomness, so a failing case can be replayed.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
