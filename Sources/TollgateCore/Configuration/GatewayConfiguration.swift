/// The whole gateway configuration, as read from `routes/` (see `ConfigurationLoader`).
///
/// Every key, its meaning and its default (durations are written `500ms`, `2s`, `1m`, `1h`,
/// or a bare number of seconds):
///
/// ```yaml
/// listen: {host: 127.0.0.1, port: 8080}        # data plane
/// admin:  {host: 127.0.0.1, port: 8081}        # control plane
/// event_loops: 0                               # 0 = one per core
/// shutdown_grace: 30s                          # SIGTERM: time in-flight requests get to finish
/// limits:
///   max_body_bytes: 10485760                   # 413 above it (nginx client_max_body_size 10M)
///   max_header_bytes: 16384                    # 431 above it (sum of names and values)
///   max_header_count: 100                      # 431 above it
///   header_timeout: 10s                        # time to receive a request head: 408, close
///   body_timeout: 30s                          # time to receive a request body: 408, close
///   idle_timeout: 75s                          # idle keep-alive connection is closed
/// timeouts:
///   connect: 2s                                # TCP connect to an instance, per try
///   per_try: 60s                               # request sent -> response head, per try
///   request: 600s                              # whole request including the streamed answer
/// retry:
///   attempts: 3                                # tries in all (1 = no retry), on distinct instances
///   budget: 20%                                # retries under way at most this share of requests in flight...
///   min_retries: 3                             # ...but always this many (Envoy's retry budget)
/// admission:                                   # the waiting line when every eligible instance is full
///   min_share: 10%                             # freed slots a waiting lower lane gets at least
///   lanes:                                     # per lane: queue timeout and length bound
///     interactive: {timeout: 10s, max_queue: 1000}
///     standard: {timeout: 30s, max_queue: 1000}
///     batch: {timeout: 120s, max_queue: 5000}
/// health:
///   max_fails: 3                               # failures within fail_timeout eject an instance...
///   fail_timeout: 30s                          # ...for fail_timeout (nginx semantics)
///   probe_path: /healthz                       # active probe; "" disables probing
///   probe_interval: 5s
///   probe_timeout: 2s
///   unhealthy_threshold: 2                     # consecutive failed probes to mark down
///   healthy_threshold: 2                       # consecutive good probes to mark up
///   metrics_path: ""                           # e.g. /metrics: read vLLM's load metrics with each probe
/// auth:
///   anonymous_department: null                 # department for requests without a key; null = 401
///   admin_key_file: null                       # file with the admin key (env TOLLGATE_ADMIN_KEY wins)
/// redis: {connect_timeout: 500ms, command_timeout: 250ms}   # the URL is --redis / TOLLGATE_REDIS_URL
/// cache:                                       # the Redis response cache (needs --redis)
///   mode: deterministic                        # off | deterministic (temperature 0 or a seed) | always
///   ttl: 1h
///   max_entry_bytes: 262144                    # larger answers are not stored
///   shared: false                              # true: one namespace for all departments
/// quotas:
///   time_zone: UTC                             # calendar days and months of the quotas
///   default_max_tokens: 1024                   # reserved when a request sets no max_tokens
/// pools:                                       # one per served model (aliases allowed)
///   - name: qwen
///     models: [qwen2.5-0.5b-instruct]
///     policy: round_robin                      # smooth weighted round-robin | least_in_flight
///     max_in_flight: 0                         # default limit of its instances; 0 = unlimited
///     instances:
///       - {name: qwen-0, url: "http://127.0.0.1:8001", labels: {gpu: "0"}, weight: 1, max_in_flight: 0, api_key: null}
/// departments:
///   - name: customer-service
///     keys: [{sha256: <hex of the key's SHA-256>, label: demo}]
///     priority: standard                       # interactive | standard | batch: its lane when instances are full
///     queue_weight: 1                          # its share against the other departments of its lane
///     quota: {requests_per_minute: 600, tokens_per_minute: 200000, tokens_per_day: 5000000, tokens_per_month: 100000000}
///     cache: {mode: always, ttl: 10m, shared: false}   # overrides the top-level cache policy
///     route:                                   # shares by instance labels; omitted = whole pool by weight
///       - {match: {gpu: "0"}, weight: 3}
///       - {match: {}, weight: 1}
/// ```
public struct GatewayConfiguration: Sendable, Equatable {
    public var listen = ListenAddress(host: "127.0.0.1", port: 8080)
    public var admin = ListenAddress(host: "127.0.0.1", port: 8081)
    /// Number of data-plane event loops; 0 means one per core.
    public var eventLoops = 0
    /// On SIGTERM, how long in-flight requests may take to finish before connections close.
    public var shutdownGrace: Duration = .seconds(30)
    public var limits = RequestLimits()
    public var timeouts = Timeouts()
    public var retry = RetryPolicy()
    /// The waiting line when every eligible instance is full (`admission:`).
    public var admission = AdmissionSettings()
    public var health = HealthSettings()
    public var auth = AuthSettings()
    public var quotas = QuotaSettings()
    /// The response cache's default policy; departments may override it.
    public var cache = CachePolicy()
    /// Timeouts of the Redis client (the URL itself comes from `--redis`/TOLLGATE_REDIS_URL,
    /// since it may hold a password).
    public var redis = RedisTimeouts()
    /// The ledger writer's backlog, its shutdown deadline, concurrent reports.
    public var ledger = LedgerLimits()
    public var pools: [PoolConfiguration] = []
    public var departments: [DepartmentConfiguration] = []
    /// What the ledger keeps of each prompt (`prompt_preview`: `off` or a number of
    /// characters, default 120); departments may override it.
    public var promptPreview: PromptPreviewPolicy = .standard

    public init() {}
}

/// A host and port to listen on (`listen`, `admin`).
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Limits on what a client may send.
public struct RequestLimits: Sendable, Equatable {
    public var maxBodyBytes = 10 * 1024 * 1024
    public var maxHeaderBytes = 16 * 1024
    public var maxHeaderCount = 100
    public var headerTimeout: Duration = .seconds(10)
    public var bodyTimeout: Duration = .seconds(30)
    public var idleTimeout: Duration = .seconds(75)
    /// Client connections open at once, over all event loops; past it a new connection gets
    /// 503 and is closed (each connection holds buffers and a file descriptor).
    public var maxConnections = 10_000
    public init() {}
}

public struct Timeouts: Sendable, Equatable {
    public var connect: Duration = .seconds(2)
    public var perTry: Duration = .seconds(60)
    public var request: Duration = .seconds(600)
    public init() {}
}

public struct RetryPolicy: Sendable, Equatable {
    /// Tries in all, each on a different instance while there are untried ones.
    public var attempts = 3
    /// `budget`: retries under way at most this share of the requests in flight (per mille).
    public var budgetPerMille = 200
    /// `min_retries`: retries always allowed at once, whatever the budget gives.
    public var minRetries = 3
    public init() {}

    public var budget: RetryBudget { RetryBudget(perMille: budgetPerMille, minimum: minRetries) }
}

/// One lane's waiting rules.
public struct LaneSettings: Sendable, Equatable {
    /// A request that waited this long gets 503 `queue_timeout` with `Retry-After`.
    public var timeout: Duration
    /// Requests waiting in the lane at most (over all event loops); past it 503 `queue_full` at once.
    public var maxQueue: Int
    public init(timeout: Duration, maxQueue: Int) {
        self.timeout = timeout
        self.maxQueue = maxQueue
    }
}

/// `admission:` — how requests wait when every eligible instance is at its `max_in_flight`.
public struct AdmissionSettings: Sendable, Equatable {
    /// `min_share`: per mille of the freed slots a waiting lower lane gets at least.
    public var minSharePerMille = 100
    /// `reserve_window`: how long a higher lane's peak of requests in flight is kept free of
    /// lower lanes' requests (`SlotReserve`: between one and two windows); 0 turns it off.
    public var reserveWindow: Duration = .seconds(1)
    /// `lanes.interactive`, `lanes.standard`, `lanes.batch`, indexed by `Lane.rawValue`.
    public var lanes: [LaneSettings] = [
        LaneSettings(timeout: .seconds(10), maxQueue: 1000),
        LaneSettings(timeout: .seconds(30), maxQueue: 1000),
        LaneSettings(timeout: .seconds(120), maxQueue: 5000),
    ]
    public init() {}

    public subscript(lane: Lane) -> LaneSettings {
        get { lanes[lane.rawValue] }
        set { lanes[lane.rawValue] = newValue }
    }
}

public struct HealthSettings: Sendable, Equatable {
    public var maxFails = 3
    public var failTimeout: Duration = .seconds(30)
    /// Path probed on each instance; empty disables active probing.
    public var probePath = "/healthz"
    public var probeInterval: Duration = .seconds(5)
    public var probeTimeout: Duration = .seconds(2)
    public var unhealthyThreshold = 2
    public var healthyThreshold = 2
    /// Path of the instances' Prometheus metrics (vLLM's `/metrics`), read with each probe;
    /// empty: not read.
    public var metricsPath = ""
    public init() {}
}

public struct AuthSettings: Sendable, Equatable {
    /// A file holding the admin key (for `/admin/api/*`); the environment variable
    /// `TOLLGATE_ADMIN_KEY` wins over it. Keep the file out of git. Relative to the working directory.
    public var adminKeyFile: String?
    /// Department that requests without an `Authorization` header are accounted to.
    /// `nil` (the default) answers them 401.
    public var anonymousDepartment: String?
    public init() {}
}

public enum BalancingPolicy: String, Sendable, Equatable, CaseIterable {
    /// Smooth weighted round-robin, nginx's default `upstream` algorithm.
    case roundRobin = "round_robin"
    /// Weighted least-in-flight: effective weight = weight / (in-flight + 1), as Envoy's least-request.
    case leastInFlight = "least_in_flight"
}

public struct PoolConfiguration: Sendable, Equatable {
    public var name: String
    /// Model names this pool serves; the first is the one `/v1/models` lists first.
    public var models: [String]
    public var policy: BalancingPolicy
    public var instances: [InstanceConfiguration]
    /// `max_in_flight`: the limit of each instance that sets none of its own; 0 = unlimited.
    public var maxInFlight: Int
    public init(name: String, models: [String], policy: BalancingPolicy = .roundRobin, instances: [InstanceConfiguration], maxInFlight: Int = 0) {
        self.name = name
        self.models = models
        self.policy = policy
        self.instances = instances
        self.maxInFlight = maxInFlight
    }
}

public struct InstanceConfiguration: Sendable, Equatable {
    public var name: String
    public var url: UpstreamURL
    public var labels: [String: String]
    public var weight: Int
    /// Concurrent requests allowed to this instance; 0 = unlimited.
    public var maxInFlight: Int
    /// Bearer token the gateway presents to this instance (vLLM `--api-key`), if any.
    public var apiKey: String?
    public init(name: String, url: UpstreamURL, labels: [String: String] = [:], weight: Int = 1, maxInFlight: Int = 0, apiKey: String? = nil) {
        self.name = name
        self.url = url
        self.labels = labels
        self.weight = weight
        self.maxInFlight = maxInFlight
        self.apiKey = apiKey
    }
}

/// `http://host:port[/base]` of an instance. Plain HTTP: instances run on the same host or network.
public struct UpstreamURL: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// Prefix put before the request path, without a trailing slash ("" for none).
    public var basePath: String

    public init(host: String, port: Int, basePath: String = "") {
        self.host = host
        self.port = port
        self.basePath = basePath
    }

    /// Parses `http://host[:port][/base]`; `nil` when it is not such a URL.
    public init?(parsing text: String) {
        guard text.hasPrefix("http://") else { return nil }
        var rest = Substring(text.dropFirst("http://".count))
        var base = ""
        if let slash = rest.firstIndex(of: "/") {
            base = String(rest[slash...])
            rest = rest[..<slash]
            while base.hasSuffix("/") { base.removeLast() }
        }
        var host = String(rest)
        var port = 80
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return nil }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()) else { return nil }
                port = p
            } else if !after.isEmpty {
                return nil
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = String(rest[..<colon])
            guard let p = Int(rest[rest.index(after: colon)...]) else { return nil }
            port = p
        }
        guard !host.isEmpty, (1...65535).contains(port), !host.contains("@") else { return nil }
        self.init(host: host, port: port, basePath: base)
    }

    /// The value of the `Host` header for this instance.
    public var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == 80 ? h : "\(h):\(port)"
    }

    public var description: String { "http://\(hostHeader)\(basePath)" }
}

public struct DepartmentConfiguration: Sendable, Equatable {
    public var name: String
    public var keys: [KeyEntry]
    /// Shares over instance groups; empty means the whole pool by instance weight.
    public var route: [RouteGroup]
    public var quota: QuotaLimits
    /// This department's cache policy; nil: the top-level `cache` policy.
    public var cache: CachePolicy?
    /// What the ledger keeps of this department's prompts; nil: the top-level `prompt_preview`.
    public var promptPreview: PromptPreviewPolicy?
    /// `priority`: its lane when the instances are full.
    public var priority: Lane
    /// `queue_weight`: its share against the other departments of its lane (1…1000).
    public var queueWeight: Int
    public init(name: String, keys: [KeyEntry] = [], route: [RouteGroup] = [], quota: QuotaLimits = QuotaLimits(), cache: CachePolicy? = nil,
                promptPreview: PromptPreviewPolicy? = nil, priority: Lane = .standard, queueWeight: Int = 1) {
        self.priority = priority
        self.queueWeight = queueWeight
        self.name = name
        self.keys = keys
        self.route = route
        self.quota = quota
        self.cache = cache
        self.promptPreview = promptPreview
    }
}

/// An API key as stored: its SHA-256 (lower-case hex), never the key itself.
public struct KeyEntry: Sendable, Equatable {
    public var sha256: String
    public var label: String
    public init(sha256: String, label: String) {
        self.sha256 = sha256
        self.label = label
    }
}

/// A group of instances selected by labels (all must match; empty matches every instance)
/// and the share of the department's traffic it receives.
public struct RouteGroup: Sendable, Equatable {
    public var match: [String: String]
    public var weight: Int
    public init(match: [String: String], weight: Int) {
        self.match = match
        self.weight = weight
    }
}

extension Duration {
    /// Whole nanoseconds, for deadlines.
    public var nanoseconds: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }

    /// Whole milliseconds.
    public var milliseconds: Int64 { nanoseconds / 1_000_000 }
}

/// How long the Redis client waits before it gives up (and the cache is bypassed).
public struct RedisTimeouts: Sendable, Equatable {
    public var connect: Duration = .milliseconds(500)
    public var command: Duration = .milliseconds(250)
    public init() {}
}

/// Bounds of the usage ledger's work (`ledger:`), read at start.
public struct LedgerLimits: Sendable, Equatable {
    /// `max_backlog`: usage rows waiting for the writer at which the ledger is saturated and
    /// new requests are refused (503); 1,000…10,000,000, default 100,000.
    public var maxBacklog = 100_000
    /// `close_timeout`: at shutdown, how long the writer may take to commit what is pending;
    /// default 30 s.
    public var closeTimeout: Duration = .seconds(30)
    /// `max_concurrent_reports`: usage reports (`/v1/usage`, the admin quota report) being
    /// prepared at a time; more get 503. 1…64, default 4.
    public var maxConcurrentReports = 4
    public init() {}
}
