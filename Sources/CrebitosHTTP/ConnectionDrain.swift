import HTTPTypes
import Hummingbird
import Synchronization

/// Set when the process starts shutting down: from then on every answer asks the client
/// (nginx) to close its connection, so that nginx stops reusing its idle keep-alive
/// connections to this instance before the instance closes them. Without it, a request
/// nginx writes on an idle connection in the instant the instance closes it is reset,
/// and nginx must answer 502 (it never resends a POST): see docs/FAULTS.md, finding 2.
public final class ConnectionDrain: Sendable {
    private let draining = Atomic<Bool>(false)

    public init() {}

    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    public func start() {
        draining.store(true, ordering: .relaxed)
    }
}

/// Adds `Connection: close` to every answer while the ``ConnectionDrain`` is draining.
public struct ConnectionDrainMiddleware<Context: RequestContext>: RouterMiddleware {
    private let drain: ConnectionDrain

    public init(drain: ConnectionDrain) {
        self.drain = drain
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // ErrorMiddleware, inside this one, has already turned errors into responses.
        var response = try await next(request, context)
        if drain.isDraining { response.headers[.connection] = "close" }
        return response
    }
}
