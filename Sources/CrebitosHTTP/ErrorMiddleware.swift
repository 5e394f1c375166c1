import Hummingbird
import Logging

/// Makes every error answer look the same: ``APIError``s answer for themselves, the
/// framework's own errors (unknown path, wrong method, body too large) get the same
/// JSON shape with their status, and anything unexpected is logged and answered with a
/// 500 that tells nothing internal.
public struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as any HTTPResponseError {
            throw APIError(error.status, error.status.reasonPhrase.lowercased())
        } catch {
            context.logger.error("unexpected error", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            throw APIError(.internalServerError, "internal error")
        }
    }
}
