/// Why a payload is not a valid transaction. Each case names the field it is about;
/// the HTTP layer turns every case into a 422 with ``message`` as the explanation.
public enum TransactionValidationError: Error, Sendable, Hashable {
    case amountMissing
    case amountNotAnInteger
    case amountNotPositive
    case amountTooLarge
    case kindMissing
    case kindInvalid
    case descriptionMissing
    case descriptionNotAString
    case descriptionEmpty
    case descriptionTooLong
    case descriptionHasControlCharacters
    case duplicateField(String)

    /// The field the error is about, in the wire format's (Portuguese) name.
    public var field: String {
        switch self {
        case .amountMissing, .amountNotAnInteger, .amountNotPositive, .amountTooLarge: "valor"
        case .kindMissing, .kindInvalid: "tipo"
        case .descriptionMissing, .descriptionNotAString, .descriptionEmpty, .descriptionTooLong,
             .descriptionHasControlCharacters: "descricao"
        case .duplicateField(let name): name
        }
    }

    public var message: String {
        switch self {
        case .amountMissing: "valor is required"
        case .amountNotAnInteger: "valor must be an integer number of cents"
        case .amountNotPositive: "valor must be greater than zero"
        case .amountTooLarge: "valor must be at most \(TransactionRequest.maximumAmount)"
        case .kindMissing: "tipo is required"
        case .kindInvalid: "tipo must be \"c\" or \"d\""
        case .descriptionMissing: "descricao is required"
        case .descriptionNotAString: "descricao must be a string"
        case .descriptionEmpty: "descricao must not be empty"
        case .descriptionTooLong:
            "descricao must be at most \(TransactionRequest.descriptionLengthRange.upperBound) characters"
        case .descriptionHasControlCharacters: "descricao must not contain control characters"
        case .duplicateField(let name): "\(name) appears more than once"
        }
    }
}
