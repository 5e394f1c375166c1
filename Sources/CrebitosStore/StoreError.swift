/// Failures of the store that are not about the request: the HTTP layer answers them
/// with a 5xx, since the client did nothing wrong.
public enum StoreError: Error, Sendable, CustomStringConvertible {
    /// The lock file could not be opened or locked; `message` is the system's (strerror).
    case lockFile(path: String, message: String)
    case synchronousModeNotApplied(expected: String, actual: String)

    public var description: String {
        switch self {
        case .lockFile(let path, let message):
            "cannot use the lock file \(path): \(message)"
        case .synchronousModeNotApplied(let expected, let actual):
            "PRAGMA synchronous is \(actual), expected \(expected)"
        }
    }
}
