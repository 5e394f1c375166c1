import CrebitosLedger

/// Turns the body of `POST /clientes/{id}/transacoes` into a ``TransactionRequest``.
/// Public for the decode benchmark (Benchmarks/).
public enum TransactionPayload {
    public enum DecodingError: Error, Equatable {
        /// The body is not JSON at all: 400.
        case notJSON(String)
        /// JSON, but not an object: 422.
        case notAnObject
        /// JSON object, but not a valid transaction: 422.
        case invalid(TransactionValidationError)
    }

    public static func decode(_ body: [UInt8]) throws(DecodingError) -> TransactionRequest {
        var amount: JSONScanner.Value?
        var kind: JSONScanner.Value?
        var description: JSONScanner.Value?
        var scanner = JSONScanner(body)
        let isObject: Bool
        do {
            isObject = try scanner.readTopLevelObject { key, value in
                switch key {
                case "valor": try set(&amount, value, key)
                case "tipo": try set(&kind, value, key)
                case "descricao": try set(&description, value, key)
                default: break  // unknown members are allowed and ignored (docs/API.md)
                }
            }
        } catch let error as JSONScanner.SyntaxError {
            throw .notJSON("\(error.message) at byte \(error.offset)")
        } catch let error as TransactionValidationError {
            throw .invalid(error)
        } catch {
            throw .notJSON("\(error)")
        }
        guard isObject else { throw .notAnObject }
        do {
            return try TransactionRequest(
                amount: try decodeAmount(amount),
                kind: try decodeKind(kind),
                description: try decodeDescription(description))
        } catch {
            throw .invalid(error)
        }
    }

    /// A member given twice is ambiguous (RFC 8259 leaves the meaning open): refused.
    private static func set(_ slot: inout JSONScanner.Value?, _ value: JSONScanner.Value, _ key: String) throws {
        guard slot == nil else { throw TransactionValidationError.duplicateField(key) }
        slot = value
    }

    private static func decodeAmount(_ value: JSONScanner.Value?) throws(TransactionValidationError) -> Int64 {
        switch value {
        case nil, .null?: throw .amountMissing
        case .integer(let amount?)?: return amount
        case .integer(nil)?: throw .amountTooLarge
        default: throw .amountNotAnInteger
        }
    }

    private static func decodeKind(_ value: JSONScanner.Value?) throws(TransactionValidationError) -> TransactionKind {
        switch value {
        case nil, .null?: throw .kindMissing
        case .string(let text)?:
            guard let kind = TransactionKind(rawValue: text) else { throw .kindInvalid }
            return kind
        default: throw .kindInvalid
        }
    }

    private static func decodeDescription(_ value: JSONScanner.Value?) throws(TransactionValidationError) -> String {
        switch value {
        case nil, .null?: throw .descriptionMissing
        case .string(let text)?: return text
        default: throw .descriptionNotAString
        }
    }
}
