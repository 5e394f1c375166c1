/// How hard each commit pushes to disk: SQLite's `PRAGMA synchronous` in WAL mode.
public enum Durability: String, Sendable, CaseIterable {
    /// Every commit waits for the WAL to be fsynced: a 200 survives a power cut.
    /// The default, because a 200 is a promise about money.
    case full
    /// Commits are written to the WAL without fsync: a 200 survives the crash of any
    /// process (the data is in the kernel's page cache), but the last commits before a
    /// power cut or kernel crash may be lost. Several times faster per commit.
    case normal

    var pragmaValue: String { rawValue.uppercased() }
    /// What `PRAGMA synchronous` reads back for this mode.
    var pragmaNumber: Int { self == .full ? 2 : 1 }
}
