/// Whether a transaction adds money to a client's balance or takes it away.
///
/// The raw values are the challenge's wire format (`"c"` and `"d"`), which is also how
/// the store writes the `tipo` column.
public enum TransactionKind: String, Sendable, Hashable, CaseIterable {
    case credit = "c"
    case debit = "d"
}
