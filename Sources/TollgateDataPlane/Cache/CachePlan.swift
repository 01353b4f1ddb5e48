import TollgateCore
import TollgateRedis

/// What the response cache does for one forwarded request.
struct CachePlan {
    let key: CacheKey
    /// The Redis key: `tollgate:cache:<namespace>:<sha256>`, so that one namespace (a
    /// department) can be purged by pattern.
    let redisKey: String
    let policy: CachePolicy
    /// Store the answer when it qualifies (200, complete, within the size limit, no `no-store`).
    let store: Bool
    /// `.miss` (looked up, absent) or `.bypass` (lookup skipped: `no-cache`, Redis unavailable).
    let outcome: CacheOutcome
    let redis: RedisConnection
    /// This request leads a single flight: it must tell the followers how it ended.
    let leader: Bool
    let preview: String?
}

/// The Redis key of an entry; the namespace stays readable so that purges can match it.
func cacheRedisKey(namespace: String, key: CacheKey) -> String {
    "tollgate:cache:" + namespace + ":" + key.hex
}
