/// What the cache did for a request; the raw value is the `usage.cache` column.
public enum CacheOutcome: String, Sendable, Codable, CaseIterable {
    /// Answered from the cache.
    case hit
    /// Cacheable, not in the cache: forwarded (and stored if successful).
    case miss
    /// Cacheable route, but the cache was skipped (Redis down, `no-cache` asked, …).
    case bypass
    /// The route does not cache.
    case off
}

/// One row of the `usage` table: one request Tollgate answered. A plain value, built by the
/// data plane and stored by the ledger (`UsageRecord+Binding.swift`, `+SQL.swift` there).
public struct UsageRecord: Sendable, Equatable {
    /// Unix time of the request, milliseconds.
    public var timeMs: Int64
    public var requestID: String
    public var department: String
    /// First 11 characters of the API key (`tg-AbCd1234`), nil for keys from configuration.
    public var keyPrefix: String?
    public var model: String?
    /// `chat`, `completions` or `embeddings`.
    public var endpoint: String
    /// The instance that answered; nil when none was called (cache hit, refused request).
    public var instance: String?
    /// HTTP status answered to the client.
    public var status: Int
    public var promptTokens: Int?
    public var completionTokens: Int?
    public var latencyMs: Double
    /// Time to first token, for streams.
    public var ttftMs: Double?
    public var cache: CacheOutcome
    public var stream: Bool
    public var cacheKey: String?
    /// First 120 characters of the last user message (the admin page's top prompts).
    public var promptPreview: String?
    /// Tokens reserved against the quota, for when the upstream reported no usage.
    public var reservedTokens: Int?
    /// The gateway replica that served the request.
    public var replica: String?
    /// Time the request waited in the gateway for a free instance slot (nil: it did not wait).
    public var queueMs: Double?
    /// The OpenAI error code of an error the gateway answered itself (`queue_timeout`,
    /// `queue_full`, `no_instance_available`, …); nil for answers from an instance.
    public var errorCode: String?

    public init(
        timeMs: Int64, requestID: String, department: String, keyPrefix: String? = nil,
        model: String? = nil, endpoint: String, instance: String? = nil, status: Int,
        promptTokens: Int? = nil, completionTokens: Int? = nil, latencyMs: Double,
        ttftMs: Double? = nil, cache: CacheOutcome, stream: Bool, cacheKey: String? = nil,
        promptPreview: String? = nil, reservedTokens: Int? = nil, replica: String? = nil,
        queueMs: Double? = nil, errorCode: String? = nil
    ) {
        self.queueMs = queueMs
        self.errorCode = errorCode
        self.timeMs = timeMs
        self.requestID = requestID
        self.department = department
        self.keyPrefix = keyPrefix
        self.model = model
        self.endpoint = endpoint
        self.instance = instance
        self.status = status
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.latencyMs = latencyMs
        self.ttftMs = ttftMs
        self.cache = cache
        self.stream = stream
        self.cacheKey = cacheKey
        self.promptPreview = promptPreview
        self.reservedTokens = reservedTokens
        self.replica = replica
    }

    /// How many characters of the last user message `promptPreview` keeps.
    public static let promptPreviewLength = 120

    /// The preview of a prompt as stored: its first 120 characters.
    public static func preview(of prompt: String) -> String {
        String(prompt.prefix(promptPreviewLength))
    }
}
