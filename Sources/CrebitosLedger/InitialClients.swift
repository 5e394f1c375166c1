/// The clients every new database starts with (docs/API.md, "The five clients"): every
/// store seeds exactly these, with a balance of 0.
public enum InitialClients {
    public static let all: [(id: Int64, limit: Int64)] = [
        (1, 100_000),
        (2, 80_000),
        (3, 1_000_000),
        (4, 10_000_000),
        (5, 500_000),
    ]
}
