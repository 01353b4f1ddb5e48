import Foundation
import Hummingbird
import NIOCore
import NIOPosix
import TollgateCore
import TollgateDataPlane
import TollgateLedger

/// What the admin API acts on; the server module supplies it.
public struct AdminServices: Sendable {
    /// The admin key in force (replaced on reload); without one `/admin/api/*` answers 503.
    public var adminKey: AdminKey
    public var keys: KeyStore?
    /// Publishes the ledger's keys to the data plane and returns once they are in force.
    public var refreshKeys: @Sendable () throws -> Void
    /// Re-reads `routes/` and the admin key; the error describes a refused file.
    public var reload: @Sendable () -> Result<ReloadOutcome, any Error>
    /// Every department's report for a period (query string as in `/v1/usage`).
    public var quotaReport: @Sendable (_ query: String) throws -> (status: Int, body: String)
    /// The usage ledger the admin page and `/admin/api/overview` read; nil without one.
    public var ledger: LedgerDatabase?
    /// The ledger's writer, for its queue depth and write latency (`/metrics`).
    public var writer: UsageWriter?
    /// Admission of reports (shared with `/v1/usage`); nil admits every report.
    public var reportGate: ReportGate?
    /// The admin page's sessions; nil: the control plane makes its own (this process only).
    public var sessions: AdminSessions?
    /// With Redis: what the replicas share (events, the key registry, the fleet view).
    public var fleet: FleetHooks?

    public init(adminKey: AdminKey, keys: KeyStore?, refreshKeys: @escaping @Sendable () throws -> Void,
                reload: @escaping @Sendable () -> Result<ReloadOutcome, any Error>,
                quotaReport: @escaping @Sendable (_ query: String) throws -> (status: Int, body: String),
                ledger: LedgerDatabase? = nil, writer: UsageWriter? = nil, reportGate: ReportGate? = nil) {
        self.adminKey = adminKey
        self.keys = keys
        self.refreshKeys = refreshKeys
        self.reload = reload
        self.quotaReport = quotaReport
        self.ledger = ledger
        self.writer = writer
        self.reportGate = reportGate
    }
}

/// The fleet layer as the admin API sees it (TollgateServer's `Fleet`).
public struct FleetHooks: Sendable {
    /// This replica's name (`--replica`).
    public var replica: String
    /// Announces an event to the other replicas.
    public var publish: @Sendable (FleetEvent) -> Void
    /// Shares this replica's key changes before the admin API answers (blocking).
    public var keysChanged: @Sendable () -> Void
    /// The fleet's rollups over [from, to); nil when Redis does not answer (blocking).
    public var view: @Sendable (_ fromMs: Int64, _ toMs: Int64) -> FleetView?

    public init(replica: String, publish: @escaping @Sendable (FleetEvent) -> Void, keysChanged: @escaping @Sendable () -> Void,
                view: @escaping @Sendable (_ fromMs: Int64, _ toMs: Int64) -> FleetView?) {
        self.replica = replica
        self.publish = publish
        self.keysChanged = keysChanged
        self.view = view
    }
}

/// What a reload did: the routing table in force, the changed settings that only a restart
/// applies, and whether the admin key changed (which ended every admin session).
public struct ReloadOutcome: Sendable {
    public var table: RoutingTable
    /// Configuration keys (`listen`, `event_loops`, …) whose new values wait for a restart.
    public var restartRequired: [String]
    public var adminKeyChanged: Bool

    public init(table: RoutingTable, restartRequired: [String] = [], adminKeyChanged: Bool = false) {
        self.table = table
        self.restartRequired = restartRequired
        self.adminKeyChanged = adminKeyChanged
    }
}

/// Only the admin key passes (or the session cookie of the admin page, which only the admin
/// key can open). A department's key gets 403, anything else 401, both in the OpenAI error format.
/// A state-changing request that only the cookie authenticates must come from the admin
/// page itself (`AdminOriginCheck`), else 403 `cross_site_request`.
struct AdminAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let services: AdminServices
    let dataPlane: DataPlane
    var sessions: AdminSessions?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let admin = services.adminKey.digest else {
            return errorResponse(.serviceUnavailable, type: "server_error", code: "admin_disabled",
                                 message: "No admin key is configured (TOLLGATE_ADMIN_KEY or auth.admin_key_file).")
        }
        if let sessions, request.headers[.authorization] == nil,
           sessions.isValid(request.cookies[AdminSessions.cookieName]?.value) {
            let check = AdminOriginCheck(request)
            guard check.isAllowed else { return crossSiteRefusal(check) }
            return try await next(request, context)
        }
        guard case .key(let digest) = Authenticator.credential(request.headers[.authorization]) else {
            return errorResponse(.unauthorized, type: "invalid_request_error", code: "invalid_api_key", message: "The admin API needs the admin key (Authorization: Bearer ...).")
        }
        if digest == admin { return try await next(request, context) }
        if Authenticator.isDepartmentKey(digest, state: dataPlane.state) {
            return errorResponse(.forbidden, type: "invalid_request_error", code: "forbidden", message: "A department key cannot use the admin API.")
        }
        return errorResponse(.unauthorized, type: "invalid_request_error", code: "invalid_api_key", message: "Incorrect admin key.")
    }
}

extension AdminOriginCheck {
    /// The check for a Hummingbird request.
    init(_ request: Request) {
        let headers = request.headers
        // A body is what a page could send: browsers send forms and fetch bodies with a
        // Content-Length (a chunked request body from fetch needs a CORS preflight).
        let length = headers[.contentLength].flatMap { Int($0) } ?? 0
        self.init(method: request.method.rawValue, host: request.head.authority, origin: headers[.origin],
                  fetchSite: headers[HTTPFields.Element.Name("Sec-Fetch-Site")!], contentType: headers[.contentType],
                  hasBody: length > 0)
    }
}

/// 403 for a cookie-authenticated request from another origin.
func crossSiteRefusal(_ check: AdminOriginCheck) -> Response {
    errorResponse(.forbidden, type: "invalid_request_error", code: "cross_site_request",
                  message: "Refused: \(check.refusal ?? "cross-site request"). State-changing admin requests authenticated by the session cookie must come from the admin page (same Origin, JSON body); scripts use Authorization: Bearer.")
}

func errorResponse(_ status: HTTPResponse.Status, type: String, code: String, message: String, param: String? = nil) -> Response {
    let body = openAIErrorBody(message: message, type: type, param: param, code: code)
    return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
}

func jsonResponse(_ status: HTTPResponse.Status = .ok, _ body: String) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
}

func jsonResponse<T: Encodable>(_ status: HTTPResponse.Status = .ok, encoding value: T) throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return jsonResponse(status, String(decoding: try encoder.encode(value), as: UTF8.self) + "\n")
}

/// Blocking work (SQLite) off the cooperative pool.
func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await NIOThreadPool.singleton.runIfActive(work)
}

extension ControlPlane {
    /// `/admin/api/*`: keys, quota report, reload. Documented in README.md ("Admin API").
    static func addAdminAPI(to router: Router<BasicRequestContext>, services: AdminServices, dataPlane: DataPlane,
                            sessions: AdminSessions? = nil) {
        let api = router.group("admin/api").add(middleware: AdminAuthMiddleware(services: services, dataPlane: dataPlane, sessions: sessions))

        api.get("overview") { request, _ -> Response in
            let parameter = request.uri.queryParameters.get("window") ?? AdminWindow.defaultWindow.rawValue
            guard let window = AdminWindow(rawValue: parameter) else {
                return errorResponse(.badRequest, type: "invalid_request_error", code: "invalid_window",
                                     message: "window must be one of \(AdminWindow.allCases.map(\.rawValue).joined(separator: ", ")).", param: "window")
            }
            let overview = try await AdminOverview.build(window: window, services: services, dataPlane: dataPlane)
            return try jsonResponse(encoding: overview)
        }

        api.get("keys") { request, _ -> Response in
            guard let store = services.keys else { return errorResponse(.notFound, type: "invalid_request_error", code: "no_ledger", message: "This gateway runs without a ledger.") }
            let department = request.uri.queryParameters.get("department")
            let keys = try await offload { try store.list(department: department) }
            return try jsonResponse(encoding: KeyList(data: keys))
        }

        api.post("keys") { request, context -> Response in
            guard let store = services.keys else { return errorResponse(.notFound, type: "invalid_request_error", code: "no_ledger", message: "This gateway runs without a ledger.") }
            let input: CreateKeyRequest
            do {
                input = try await request.decode(as: CreateKeyRequest.self, context: context)
            } catch {
                return errorResponse(.badRequest, type: "invalid_request_error", code: "invalid_request",
                                     message: "Expected JSON {\"department\": \"...\", \"name\": \"...\", \"expires\": \"90d\"}.")
            }
            guard dataPlane.state.table.department(named: input.department) != nil else {
                return errorResponse(.badRequest, type: "invalid_request_error", code: "unknown_department",
                                     message: "No department \"\(input.department)\" in the configuration.", param: "department")
            }
            do {
                let lifetime = try input.expires.map { try KeyStore.parseDuration($0) }
                let created = try await offload { try store.create(department: input.department, label: input.name, expiresIn: lifetime) }
                try await offload { try services.refreshKeys() }
                // In the registry before the answer: every replica has it within a second.
                if let fleet = services.fleet { try await offload { fleet.keysChanged() } }
                return try jsonResponse(.created, encoding: CreatedKeyResponse(key: created.key, info: created.info))
            } catch let error as LedgerError {
                return errorResponse(.badRequest, type: "invalid_request_error", code: error.codeString, message: error.message)
            }
        }

        api.delete("keys/:prefix") { _, context -> Response in
            guard let store = services.keys else { return errorResponse(.notFound, type: "invalid_request_error", code: "no_ledger", message: "This gateway runs without a ledger.") }
            let prefix = try context.parameters.require("prefix")
            do {
                let info = try await offload { try store.revoke(prefix: prefix) }
                // In force before we answer: the next request with that key is refused. The
                // other replicas are told before the answer too (in force there within a second).
                try await offload { try services.refreshKeys() }
                if let fleet = services.fleet { try await offload { fleet.keysChanged() } }
                return try jsonResponse(encoding: info)
            } catch let error as LedgerError {
                return errorResponse(.notFound, type: "invalid_request_error", code: error.codeString, message: error.message)
            }
        }

        api.get("reports/quota") { request, _ -> Response in
            let query = request.uri.query ?? ""
            // Admitted before it is queued: the pool's queue cannot grow past the gate.
            if let gate = services.reportGate, !gate.tryEnter() {
                let busy = GatewayError.reportsBusy
                var response = errorResponse(.serviceUnavailable, type: busy.type, code: busy.codeString, message: busy.message)
                response.headers[.retryAfter] = "\(busy.retryAfter ?? 1)"
                return response
            }
            defer { services.reportGate?.leave() }
            let answer = try await offload { try services.quotaReport(query) }
            return jsonResponse(HTTPResponse.Status(code: answer.status), answer.body)
        }

        // Purge cached answers: one department's (?department=NAME) or all.
        api.delete("cache") { request, _ -> Response in
            let department = request.uri.queryParameters.get("department")
            if let department, dataPlane.state.table.department(named: department) == nil {
                return errorResponse(.badRequest, type: "invalid_request_error", code: "unknown_department",
                                     message: "No department \"\(department)\" in the configuration.", param: "department")
            }
            do {
                let removed = try await dataPlane.purgeCache(department: department)
                // Redis is shared; the other replicas' in-memory tiers are told at once.
                services.fleet?.publish(.purge(department: department))
                return jsonResponse(.ok, "{\"purged\":\(removed)}\n")
            } catch {
                return errorResponse(.serviceUnavailable, type: "server_error", code: "cache_unavailable", message: "The cache cannot be purged now: \(error)")
            }
        }

        api.post("reload") { request, _ -> Response in
            // `?fleet=1`: every replica reloads (each reads its own files), told through Redis.
            let fleetWide = ["1", "true"].contains(request.uri.queryParameters.get("fleet") ?? "")
            if fleetWide, services.fleet == nil {
                return errorResponse(.badRequest, type: "invalid_request_error", code: "no_fleet",
                                     message: "fleet=1 needs Redis (--redis): this gateway has no other replicas to tell.", param: "fleet")
            }
            switch try await offload({ services.reload() }) {
            case .success(let outcome):
                struct Answer: Encodable {
                    let reloaded = true
                    let generation: Int
                    let instances: Int
                    let restartRequired: [String]
                    let adminKeyChanged: Bool
                    let fleet: Bool
                }
                if fleetWide { services.fleet?.publish(.reload) }
                return try jsonResponse(encoding: Answer(generation: outcome.table.generation, instances: outcome.table.instances.count,
                                                         restartRequired: outcome.restartRequired, adminKeyChanged: outcome.adminKeyChanged,
                                                         fleet: fleetWide))
            case .failure(let error):
                return errorResponse(.unprocessableContent, type: "invalid_request_error", code: "configuration_refused", message: "\(error)")
            }
        }
    }
}


struct KeyList: Encodable { let object = "list"; let data: [APIKeyInfo] }
struct CreateKeyRequest: Decodable {
    let department: String
    let name: String?
    let expires: String?
}
struct CreatedKeyResponse: Encodable {
    /// Shown once; only its SHA-256 is stored.
    let key: String
    let info: APIKeyInfo
}
