/// One department's usage over a report period, summed over every ledger given.
public struct DepartmentReport: Sendable, Codable, Equatable {
    public var department: String
    public var requests: Int
    public var promptTokens: Int
    public var completionTokens: Int
    /// `promptTokens + completionTokens` (reserved tokens of requests without usage are not
    /// counted here; the quota seeding in `Reports.tokenSums` does count them).
    public var totalTokens: Int
    public var cacheHits: Int
    /// Hits over cacheable requests (hit + miss); 0 when there were none.
    public var cacheHitRate: Double
    /// Requests answered with status 400 or more.
    public var errors: Int
    /// Exact nearest-rank percentiles of `latency_ms` over all the requests; 0 when none.
    public var p50LatencyMs: Double
    public var p95LatencyMs: Double
    /// Requests that reached an instance (rows with an instance).
    public var upstreamCalls: Int
    /// Filled by the caller from the quota configuration, nil otherwise.
    public var tokenLimit: Int?
    public var quotaUsedPercent: Double?

    public init(department: String, requests: Int, promptTokens: Int, completionTokens: Int,
                totalTokens: Int, cacheHits: Int, cacheHitRate: Double, errors: Int,
                p50LatencyMs: Double, p95LatencyMs: Double, upstreamCalls: Int,
                tokenLimit: Int? = nil, quotaUsedPercent: Double? = nil) {
        self.department = department
        self.requests = requests
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.totalTokens = totalTokens
        self.cacheHits = cacheHits
        self.cacheHitRate = cacheHitRate
        self.errors = errors
        self.p50LatencyMs = p50LatencyMs
        self.p95LatencyMs = p95LatencyMs
        self.upstreamCalls = upstreamCalls
        self.tokenLimit = tokenLimit
        self.quotaUsedPercent = quotaUsedPercent
    }

    /// Sets `tokenLimit` and `quotaUsedPercent` (totalTokens / limit × 100).
    public mutating func applyQuota(tokenLimit: Int) {
        self.tokenLimit = tokenLimit
        quotaUsedPercent = tokenLimit > 0 ? Double(totalTokens) / Double(tokenLimit) * 100 : nil
    }
}

/// Hit-rate of one time bucket, for the admin page.
public struct HitRateBucket: Sendable, Codable, Equatable {
    /// Start of the bucket, Unix ms.
    public var bucketStartMs: Int64
    /// Every request in the bucket (hit, miss, bypass, off).
    public var requests: Int
    public var hits: Int
    public var misses: Int

    public init(bucketStartMs: Int64, requests: Int, hits: Int, misses: Int) {
        self.bucketStartMs = bucketStartMs
        self.requests = requests
        self.hits = hits
        self.misses = misses
    }
}

/// A prompt preview and how often it was answered from the cache.
public struct PromptHits: Sendable, Codable, Equatable {
    public var preview: String
    public var hits: Int

    public init(preview: String, hits: Int) {
        self.preview = preview
        self.hits = hits
    }
}
