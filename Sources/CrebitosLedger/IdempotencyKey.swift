/// A client-chosen token that makes retrying a transaction safe: see
/// ``Ledger/apply(_:toClient:idempotencyKey:)``.
public struct IdempotencyKey: Sendable, Hashable {
    public static let lengthRange = 1...128

    public let value: String

    /// Accepts 1 to 128 printable ASCII characters (what an HTTP header can carry without
    /// ambiguity); anything else is refused rather than normalised.
    public init?(_ value: some StringProtocol) {
        guard Self.lengthRange.contains(value.utf8.count),
              value.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E })
        else { return nil }
        self.value = String(value)
    }
}
