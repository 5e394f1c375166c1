/// Failures of the store that are not about the request: the HTTP layer answers them
/// with a 5xx, since the client did nothing wrong.
public enum StoreError: Error, Sendable, CustomStringConvertible {
    case lockFile(path: String, errno: Int32)
    case synchronousModeNotApplied(expected: String, actual: String)

    public var description: String {
        switch self {
        case .lockFile(let path, let errno):
            "cannot use the lock file \(path) (errno \(errno))"
        case .synchronousModeNotApplied(let expected, let actual):
            "PRAGMA synchronous is \(actual), expected \(expected)"
        }
    }
}
