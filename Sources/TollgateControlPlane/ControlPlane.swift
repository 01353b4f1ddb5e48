import Atomics
import Foundation
import Hummingbird
import Logging
import NIOCore
import TollgateCore
import TollgateDataPlane

/// The control plane: Hummingbird 2 on its own port (default 127.0.0.1:8081): `/healthz` with
/// the pool's state, `/metrics` (Prometheus), and with `admin` the admin page `/admin` and the
/// admin API `/admin/api/*`.
public enum ControlPlane {
    /// Builds the control-plane application for a running data plane.
    public static func buildApplication(
        dataPlane: DataPlane,
        admin: AdminServices? = nil,
        logger: Logger,
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let router = Router()
        if let admin {
            let sessions = admin.sessions ?? AdminSessions(key: admin.adminKey, shared: false)
            addAdminAPI(to: router, services: admin, dataPlane: dataPlane, sessions: sessions)
            addAdminPage(to: router, services: admin, dataPlane: dataPlane, sessions: sessions)
        }
        addMetrics(to: router, dataPlane: dataPlane, writer: admin?.writer)
        router.get("/healthz") { _, _ -> Response in
            let health = try await dataPlane.monitor.snapshot().get()
            let report = HealthReport(dataPlane: dataPlane, health: health)
            let data = try JSONEncoder.sorted.encode(report)
            return Response(
                status: report.status == "ok" ? .ok : .serviceUnavailable,
                headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        let admin = dataPlane.state.table.configuration.admin
        return Application(
            router: router,
            configuration: .init(address: .hostname(admin.host, port: admin.port), serverName: "tollgate-admin"),
            onServerRunning: onServerRunning,
            logger: logger)
    }
}

/// `GET /healthz` on the control plane: liveness, then every instance's state.
struct HealthReport: Encodable {
    struct Instance: Encodable {
        let name: String
        let pool: String
        let url: String
        let labels: [String: String]
        let available: Bool
        let probeUp: Bool
        let ejected: Bool
        let ejections: Int
        let recentFailures: Int
    }
    let status: String
    let generation: Int
    let instancesAvailable: Int
    let instances: [Instance]
    let activeRequests: Int
    let requests: Int

    init(dataPlane: DataPlane, health: [String: InstanceHealth]) {
        let state = dataPlane.state
        let table = state.table
        instances = InstanceStatus.all(in: state, health: health).map { s in
            Instance(name: s.name, pool: s.pool, url: s.url, labels: s.labels, available: s.available, probeUp: s.probeUp,
                     ejected: s.ejected, ejections: s.ejections, recentFailures: s.recentFailures)
        }
        instancesAvailable = instances.filter(\.available).count
        status = instancesAvailable > 0 ? "ok" : "degraded"
        generation = table.generation
        activeRequests = dataPlane.activeRequests
        requests = dataPlane.counters.reduce(0) { $0 + $1.requests.load(ordering: .relaxed) }
    }

    enum CodingKeys: String, CodingKey {
        case status, generation, instances, requests
        case instancesAvailable = "instances_available"
        case activeRequests = "active_requests"
    }
}

extension HealthReport.Instance {
    enum CodingKeys: String, CodingKey {
        case name, pool, url, labels, available, ejected, ejections
        case probeUp = "probe_up"
        case recentFailures = "recent_failures"
    }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}
