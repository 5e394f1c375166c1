import CoreMetrics
import NIOCore
import NIOHTTP1

/// What an instance counts about its HTTP traffic, for `GET /metrics`: requests by route
/// and status, their latency by route (from the whole request having arrived to the answer
/// being handed to the socket), and how long they took to get here from the load balancer
/// (from nginx's `X-Request-Start` stamp to the whole request having arrived: nginx passing
/// it on, the socket, the event loop waking and reading it).
///
/// Every counter and timer is created up front, so recording a request is two array
/// look-ups and two atomic updates, with no label formatting on the request path.
public final class ServerMetrics: Sendable {
    /// The routes as the metrics label them (`route="transacoes"`).
    enum Route: Int, CaseIterable {
        case transaction, statement, health, metrics, other

        var label: String {
            switch self {
            case .transaction: "transacoes"
            case .statement: "extrato"
            case .health: "health"
            case .metrics: "metrics"
            case .other: "other"
            }
        }
    }

    /// The statuses this server answers with; anything else is counted as "other".
    static let statuses: [UInt] = [200, 400, 404, 408, 409, 413, 415, 417, 422, 500, 503]

    private let requests: [[Counter]]  // [route][status index], the last index for "other"
    private let latency: [Timer]  // [route]
    private let queueing: [Timer]  // [route]
    /// The Prometheus text page, rendered by whoever owns the registry (the app).
    let renderPage: @Sendable () -> [UInt8]

    /// - Parameters:
    ///   - factory: where the counters live (the app's Prometheus registry).
    ///   - renderPage: renders every metric of the process (the store's too) as text.
    public init(factory: any MetricsFactory, renderPage: @escaping @Sendable () -> [UInt8]) {
        requests = Route.allCases.map { route in
            (Self.statuses.map { String($0) } + ["other"]).map { status in
                Counter(
                    label: "crebitos_http_requests_total",
                    dimensions: [("route", route.label), ("status", status)], factory: factory)
            }
        }
        latency = Route.allCases.map { route in
            Timer(label: "crebitos_http_request_duration_seconds", dimensions: [("route", route.label)], factory: factory)
        }
        queueing = Route.allCases.map { route in
            Timer(label: "crebitos_http_request_queue_seconds", dimensions: [("route", route.label)], factory: factory)
        }
        self.renderPage = renderPage
    }

    func record(_ route: Route, status: HTTPResponseStatus, nanoseconds: Int64) {
        let index = Self.statuses.firstIndex(of: status.code) ?? Self.statuses.count
        requests[route.rawValue][index].increment()
        latency[route.rawValue].recordNanoseconds(nanoseconds)
    }

    /// How long a request took from the load balancer's stamp to here. The stamp has the
    /// balancer's resolution (nginx's `$msec`: a millisecond), so this is good to a millisecond.
    func recordQueueing(_ route: Route, waited: Duration) {
        let (seconds, attoseconds) = waited.components
        queueing[route.rawValue].recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
