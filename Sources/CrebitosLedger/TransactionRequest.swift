/// A credit or debit that passed every rule that can be checked without the database.
///
/// The only way to get one is through ``init(amount:kind:description:)``, which throws
/// ``TransactionValidationError`` for anything the contract (docs/API.md) calls invalid. The store can
/// therefore trust every field; the one rule that needs the database (a debit must not
/// take the balance below `-limite`) is enforced atomically by the store.
public struct TransactionRequest: Sendable, Hashable {
    /// The largest amount, in cents, a single transaction may carry, and the largest
    /// balance a client may reach: 2^53 − 1, the largest integer every JSON client
    /// (JavaScript included) reads exactly. Keeping every stored number below it also
    /// means `saldo + valor` can never overflow SQLite's 64-bit integers (on overflow
    /// SQLite silently switches to floating point).
    public static let maximumAmount: Int64 = 9_007_199_254_740_991

    /// Description length bounds, counted in Unicode scalars (code points): "ação" is 4
    /// whether or not its accents are precomposed in the same way SQLite's `length()`
    /// counts, so the database's CHECK constraint and this rule always agree.
    public static let descriptionLengthRange = 1...10

    /// `valor`: a positive amount in cents.
    public let amount: Int64
    /// `tipo`
    public let kind: TransactionKind
    /// `descricao`
    public let description: String

    public init(amount: Int64, kind: TransactionKind, description: String) throws(TransactionValidationError) {
        guard amount > 0 else { throw .amountNotPositive }
        guard amount <= Self.maximumAmount else { throw .amountTooLarge }
        let length = description.unicodeScalars.count
        guard length >= Self.descriptionLengthRange.lowerBound else { throw .descriptionEmpty }
        guard length <= Self.descriptionLengthRange.upperBound else { throw .descriptionTooLong }
        // Control characters (NUL, newlines, escapes, C1 controls) are valid JSON once
        // escaped, but they are never part of a label a person reads, and NUL truncates
        // text in SQLite's string functions.
        guard !description.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw .descriptionHasControlCharacters
        }
        self.amount = amount
        self.kind = kind
        self.description = description
    }

    /// The signed change this transaction makes to a balance.
    public var balanceDelta: Int64 {
        kind == .credit ? amount : -amount
    }
}
