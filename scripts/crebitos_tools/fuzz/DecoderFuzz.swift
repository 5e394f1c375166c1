// libFuzzer target for the request decoder (Sources/CrebitosHTTP/TransactionPayload.swift and
// JSONScanner.swift), compiled by scripts/fuzz-decoder straight from the sources, unchanged.
//
// Each input is a request body. The decoder must never crash, hang or trip the address
// sanitizer, and whenever it accepts a body, Foundation's JSON parser must read the same
// body as an object with the same valor, tipo and descricao (a differential oracle: the
// strict decoder may refuse more than Foundation, never accept something else).
import CrebitosLedger
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func crebitosDecoderFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let decoded: TransactionRequest
    do {
        decoded = try TransactionPayload.decode(bytes)
    } catch {
        return 0
    }
    guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
        // RFC 8259 lets parsers bound the numbers they take: Foundation refuses one that is
        // not a finite double (1e400, 400 digits); the decoder takes any number the grammar
        // allows, so that the contract's "a number too large to store" (docs/API.md) in valor is a 422, not a 400.
        if hasNumberBeyondDouble(bytes) { return 0 }
        fatalError("the decoder accepted a body Foundation does not read as a JSON object: \(String(decoding: bytes, as: UTF8.self))")
    }
    let valor = (object["valor"] as? NSNumber)?.int64Value
    let tipo = object["tipo"] as? String
    let descricao = object["descricao"] as? String
    guard valor == decoded.amount, tipo == decoded.kind.rawValue, descricao == decoded.description else {
        fatalError("decoder and Foundation disagree: decoder \(decoded), Foundation \(object)")
    }
    return 0
}

/// Whether the body holds a number token (outside strings) that is not a finite double.
func hasNumberBeyondDouble(_ bytes: [UInt8]) -> Bool {
    var index = 0
    var inString = false
    while index < bytes.count {
        let byte = bytes[index]
        if inString {
            if byte == UInt8(ascii: "\\") { index += 2; continue }
            if byte == UInt8(ascii: "\"") { inString = false }
            index += 1
            continue
        }
        if byte == UInt8(ascii: "\"") { inString = true; index += 1; continue }
        if byte == UInt8(ascii: "-") || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) {
            let start = index
            while index < bytes.count, "0123456789+-.eE".utf8.contains(bytes[index]) { index += 1 }
            let token = String(decoding: bytes[start..<index], as: UTF8.self)
            if let value = Double(token), !value.isFinite { return true }
            continue
        }
        index += 1
    }
    return false
}
