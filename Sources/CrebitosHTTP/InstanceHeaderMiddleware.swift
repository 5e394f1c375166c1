import HTTPTypes
import Hummingbird

/// Adds `x-instance: <name>` to every answer, errors included, so that anyone behind the
/// load balancer (the round-robin test, a person with curl) can see who served it.
public struct InstanceHeaderMiddleware<Context: RequestContext>: RouterMiddleware {
    private let name: String

    public init(name: String) {
        self.name = name
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // ErrorMiddleware, inside this one, has already turned errors into responses.
        var response = try await next(request, context)
        response.headers[.instance] = name
        return response
    }
}

extension HTTPField.Name {
    static let instance = HTTPField.Name("x-instance")!
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let idempotentReplayed = HTTPField.Name("Idempotent-Replayed")!
}
