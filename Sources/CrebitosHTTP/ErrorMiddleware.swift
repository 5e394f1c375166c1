import Hummingbird
import Logging

/// The innermost middleware: turns every error into its answer. Makes every error answer look the same: ``APIError``s answer for themselves, the
/// framework's own errors (unknown path, wrong method, body too large) get the same
/// JSON shape with their status, and anything unexpected is logged and answered with a
/// 500 that tells nothing internal.
public struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let error: APIError
        do {
            return try await next(request, context)
        } catch let apiError as APIError {
            error = apiError
        } catch let httpError as any HTTPResponseError {
            error = APIError(httpError.status, httpError.status.reasonPhrase.lowercased())
        } catch let unexpected {
            context.logger.error("unexpected error", metadata: ["error": "\(unexpected)", "path": "\(request.uri.path)"])
            error = APIError(.internalServerError, "internal error")
        }
        // Answered here rather than rethrown, so the middlewares outside this one only
        // ever see responses and can decorate errors and successes alike.
        return try error.response(from: request, context: context)
    }
}
