import Synchronization

/// Set when the process starts shutting down: from then on every answer asks the client
/// (nginx) to close its connection, and the connection is closed after it, so that nginx
/// stops reusing its idle keep-alive connections to this instance before the instance
/// closes them. Without it, a request nginx writes on an idle connection in the instant
/// the instance closes it is reset, and nginx must answer 502 (it never resends a POST):
/// see docs/FAULTS.md, finding 2.
public final class ConnectionDrain: Sendable {
    private let draining = Atomic<Bool>(false)

    public init() {}

    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    public func start() {
        draining.store(true, ordering: .relaxed)
    }
}
