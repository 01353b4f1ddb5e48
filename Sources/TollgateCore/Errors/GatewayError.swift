/// An error answered to a client, in the OpenAI error format:
/// `{"error":{"message":…,"type":…,"param":…,"code":…}}`.
///
/// Each failure is a static member with its own status, so that the edge never turns an
/// unexpected error into a bare 500.
public struct GatewayError: Error, Sendable, Equatable {
    private enum Code: String, Sendable {
        case invalidAPIKey = "invalid_api_key"
        case notFound = "not_found"
        case methodNotAllowed = "method_not_allowed"
        case modelNotFound = "model_not_found"
        case invalidRequest = "invalid_request"
        case bodyTooLarge = "request_too_large"
        case headersTooLarge = "request_header_fields_too_large"
        case requestTimeout = "request_timeout"
        case noInstanceAvailable = "no_instance_available"
        case upstreamUnavailable = "upstream_unavailable"
        case upstreamTimeout = "upstream_timeout"
        case shuttingDown = "shutting_down"
        case rateLimitExceeded = "rate_limit_exceeded"
        case overloaded = "overloaded"
        case reportsBusy = "reports_busy"
        case ledgerSaturated = "ledger_saturated"
        case ledgerUnavailable = "ledger_unavailable"
        case queueTimeout = "queue_timeout"
        case queueFull = "queue_full"
    }

    private let code: Code
    public let status: Int
    public let type: String
    public let message: String
    public let param: String?
    /// Seconds for a `Retry-After` header, when waiting helps.
    public let retryAfter: Int?

    private init(_ code: Code, status: Int, type: String, message: String, param: String? = nil, retryAfter: Int? = nil) {
        self.code = code
        self.status = status
        self.type = type
        self.message = message
        self.param = param
        self.retryAfter = retryAfter
    }

    public var codeString: String { code.rawValue }

    public static func invalidAPIKey(_ message: String) -> GatewayError {
        GatewayError(.invalidAPIKey, status: 401, type: "invalid_request_error", message: message)
    }
    public static func notFound(method: String, path: String) -> GatewayError {
        GatewayError(.notFound, status: 404, type: "invalid_request_error", message: "Invalid URL (\(excerpt(method)) \(excerpt(path)))")
    }
    public static func methodNotAllowed(method: String, path: String) -> GatewayError {
        GatewayError(.methodNotAllowed, status: 405, type: "invalid_request_error", message: "Method \(excerpt(method)) is not allowed on \(excerpt(path))")
    }
    public static func modelNotFound(_ model: String) -> GatewayError {
        GatewayError(.modelNotFound, status: 404, type: "invalid_request_error",
                     message: "The model `\(excerpt(model))` does not exist or you do not have access to it.", param: "model")
    }
    public static func invalidRequest(_ message: String, param: String? = nil) -> GatewayError {
        GatewayError(.invalidRequest, status: 400, type: "invalid_request_error", message: message, param: param)
    }
    public static func bodyTooLarge(limit: Int) -> GatewayError {
        GatewayError(.bodyTooLarge, status: 413, type: "invalid_request_error", message: "Request body exceeds the limit of \(limit) bytes.")
    }
    public static func headersTooLarge(_ what: String) -> GatewayError {
        GatewayError(.headersTooLarge, status: 431, type: "invalid_request_error", message: what)
    }
    public static let requestTimeout = GatewayError(
        .requestTimeout, status: 408, type: "invalid_request_error", message: "The request was not received in time.")
    public static func noInstanceAvailable(model: String) -> GatewayError {
        GatewayError(.noInstanceAvailable, status: 503, type: "server_error",
                     message: "No healthy instance is available for model `\(model)`. Retry shortly.", retryAfter: 5)
    }
    public static func upstreamUnavailable(_ detail: String) -> GatewayError {
        GatewayError(.upstreamUnavailable, status: 502, type: "server_error", message: "The model instance could not be reached: \(detail)", retryAfter: 1)
    }
    public static let upstreamTimeout = GatewayError(
        .upstreamTimeout, status: 504, type: "server_error", message: "The model instance did not answer in time.", retryAfter: 1)
    /// A department's quota is used up (`used >= limit`) for the current window.
    public static func quotaExceeded(department: String, meter: QuotaMeter, limit: Int, used: Int, requested: Int, retryAfter: Int) -> GatewayError {
        let what: String
        switch meter {
        case .requestsPerMinute: what = "requests per min (RPM)"
        case .tokensPerMinute: what = "tokens per min (TPM)"
        case .tokensPerDay: what = "tokens per day (TPD)"
        case .tokensPerMonth: what = "tokens per month"
        }
        return GatewayError(
            .rateLimitExceeded, status: 429, type: meter == .requestsPerMinute ? "requests" : "tokens",
            message: "Rate limit reached for department \(department) on \(what): Limit \(limit), Used \(used), Requested \(requested). Please try again in \(retryAfter)s.",
            retryAfter: retryAfter)
    }

    /// A bound of the gateway's own is reached (connections, the ledger's backlog): new work is
    /// refused rather than lose what was recorded, and a retry soon will likely pass.
    public static func overloaded(_ what: String, retryAfter: Int = 1) -> GatewayError {
        GatewayError(.overloaded, status: 503, type: "server_error", message: "The gateway is overloaded: \(what). Retry shortly.",
                     retryAfter: retryAfter)
    }

    /// Every instance the request may use stayed full for its lane's whole queue timeout. A 503
    /// with `Retry-After`: the OpenAI SDKs retry it.
    public static func queueTimeout(lane: Lane, waitedMs: Int64, retryAfter: Int) -> GatewayError {
        GatewayError(.queueTimeout, status: 503, type: "server_error",
                     message: "Every instance was busy for \(waitedMs) ms, the \(lane.name) lane's queue timeout. Retry in \(retryAfter)s.",
                     retryAfter: retryAfter)
    }

    /// The lane's waiting line is at its bound: refused at once rather than queued.
    public static func queueFull(lane: Lane, retryAfter: Int) -> GatewayError {
        GatewayError(.queueFull, status: 503, type: "server_error",
                     message: "Every instance is busy and the \(lane.name) lane's queue is full. Retry in \(retryAfter)s.",
                     retryAfter: retryAfter)
    }

    /// `Retry-After` of a shed request, by lane: interactive callers come back soon, a batch
    /// flood is asked to hold back longer (every client coming back at once is what filled it).
    public static func shedRetryAfter(_ lane: Lane) -> Int {
        switch lane {
        case .interactive: 1
        case .standard: 2
        case .batch: 5
        }
    }

    /// At most `limit` characters of a client's text, for messages that quote it back.
    public static func excerpt(_ text: String, limit: Int = 200) -> String {
        text.utf8.count <= limit ? text : String(text.prefix(limit)) + "…"
    }
    /// More usage reports are running or waiting than the gateway admits (`ReportGate`).
    public static let reportsBusy = GatewayError(
        .reportsBusy, status: 503, type: "server_error",
        message: "Too many usage reports are being prepared right now. Retry shortly.", retryAfter: 2)
    /// The usage ledger cannot keep up (its backlog is full, e.g. the disk is full): new
    /// requests are refused rather than answered without a record.
    /// The usage ledger could not be read (a report failed in SQLite).
    public static let ledgerUnavailable = GatewayError(
        .ledgerUnavailable, status: 503, type: "server_error", message: "The usage ledger could not be read. Retry shortly.", retryAfter: 5)

    public static let ledgerSaturated = GatewayError(
        .ledgerSaturated, status: 503, type: "server_error",
        message: "The gateway cannot record usage right now. Retry shortly.", retryAfter: 5)

    public static let shuttingDown = GatewayError(
        .shuttingDown, status: 503, type: "server_error", message: "The gateway is shutting down. Retry shortly.", retryAfter: 1)

    /// The JSON body.
    public var body: String {
        openAIErrorBody(message: message, type: type, param: param, code: code.rawValue)
    }
}

/// `{"error":{"message","type","param","code"}}`, the OpenAI error format, as one line.
public func openAIErrorBody(message: String, type: String, param: String?, code: String) -> String {
    var out = "{\"error\":{\"message\":"
    appendJSONString(message, to: &out)
    out += ",\"type\":"
    appendJSONString(type, to: &out)
    out += ",\"param\":"
    if let param { appendJSONString(param, to: &out) } else { out += "null" }
    out += ",\"code\":"
    appendJSONString(code, to: &out)
    out += "}}\n"
    return out
}
