import Hummingbird

/// `GET /health`: answers once the process serves, which is only after its database was
/// opened and migrated. For the load balancer's and the orchestrator's checks, outside
/// the challenge's paths.
public struct HealthController: Sendable {
    public let instanceName: String

    public init(instanceName: String) {
        self.instanceName = instanceName
    }

    public func addRoutes<Context: RequestContext>(to router: Router<Context>) {
        router.get("/health") { _, _ in
            var json = JSONWriter(capacity: 64)
            json.raw("{\"status\":\"ok\",\"instance\":")
            json.string(instanceName)
            json.raw("}")
            return JSONResponse.ok(json)
        }
    }
}
