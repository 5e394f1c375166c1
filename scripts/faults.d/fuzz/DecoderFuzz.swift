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
