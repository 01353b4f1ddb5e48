import Atomics
import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateRedis

/// Step 5 of a request, what it decides before any I/O: whether the department's policy and the
/// request's `Cache-Control` allow the cache, the request's keys (from the loop's memo of bodies
/// seen before, else canonicalized and hashed), and the loop's in-memory tier. Redis and the
/// single flight come after (`lookUp`, in `CacheLookup+Redis`), each outcome a `CachePlan` for
/// the exchange or a `CachedReply` to answer with.
struct CacheLookup {
    let keys: CacheKeys
    let policy: CachePolicy
    let decision: CacheDecision
    let redis: RedisConnection

    enum Start {
        /// No cache for this request (policy off, no Redis, not deterministic, a body that does
        /// not canonicalize): forward without a plan.
        case off
        /// No lookup (Redis away, `Cache-Control: no-cache`): forward; the answer may be stored.
        case bypass(CachePlan)
        /// Found in this loop's own tier.
        case hit(CachedAnswer, CacheLookup)
        /// To be looked up in Redis.
        case lookup(CacheLookup)
    }

    static func start(_ admitted: AdmittedRequest, loop: LoopContext) -> Start {
        let request = admitted.request
        let table = request.state.table
        let policy = table.configuration.departments[request.caller.department].cache ?? table.configuration.cache
        guard policy.mode != .off, let redis = loop.redis else { return .off }
        let directives = CacheDirectives(cacheControl: request.head.cacheControl ?? "")
        let decision = policy.decide(temperature: admitted.summary.temperature, hasSeed: admitted.summary.hasSeed, directives: directives)
        guard decision.lookup || decision.store,
              let keys = CacheKeys.make(admitted, policy: policy, memo: loop.keyMemo) else { return .off }
        let lookup = CacheLookup(keys: keys, policy: policy, decision: decision, redis: redis)
        guard redis.isAvailable, decision.lookup else {
            loop.counters.cacheBypasses.wrappingIncrement(ordering: .relaxed)
            return .bypass(lookup.plan(.bypass, store: decision.store, leader: false))
        }
        if let answer = loop.localCache.get(keys.redisKey, nowMs: wallClockMs()) { return .hit(answer, lookup) }
        return .lookup(lookup)
    }

    /// The exchange's cache plan for an outcome.
    func plan(_ outcome: CacheOutcome, store: Bool, leader: Bool) -> CachePlan {
        CachePlan(key: keys.key, redisKey: keys.redisKey, policy: policy, store: store && redis.isAvailable, outcome: outcome,
                  redis: redis, leader: leader, preview: keys.preview)
    }
}

/// A request's cache keys and prompt preview; `remember` is set when its body was not in the
/// loop's memo (it is put there once the request proves to be asked again, on a Redis hit).
struct CacheKeys {
    let key: CacheKey
    let redisKey: String
    let preview: String?
    let remember: (slot: Int, entry: (ByteBuffer) -> CacheKeyMemo.Entry)?

    /// From the loop's memo when this very body was seen before, else canonicalized, hashed and
    /// read. Nil when the body cannot be canonicalized (then it is not cached).
    static func make(_ admitted: AdmittedRequest, policy: CachePolicy, memo: CacheKeyMemo) -> CacheKeys? {
        let request = admitted.request, model = admitted.model
        let namespace = policy.namespace(department: request.departmentName)
        let endpoint = request.endpoint.name
        return request.body.withUnsafeReadableBytes { body -> CacheKeys? in
            let (slot, known) = memo.lookup(body, namespace: namespace, endpoint: endpoint, model: model)
            if let known { return CacheKeys(key: known.key, redisKey: known.redisKey, preview: known.preview, remember: nil) }
            guard let canonical = try? CanonicalJSON.canonicalize(Array(body)) else { return nil }
            let key = CacheKey.make(namespace: namespace, endpoint: endpoint, model: model, canonicalBody: canonical)
            let redisKey = cacheRedisKey(namespace: namespace, key: key)
            let preview = promptPreview(body: request.body, range: admitted.summary.promptRange)
            return CacheKeys(key: key, redisKey: redisKey, preview: preview, remember: (slot, { body in
                CacheKeyMemo.Entry(body: Array(body.readableBytesView), namespace: namespace, endpoint: endpoint, model: model,
                                   key: key, redisKey: redisKey, preview: preview)
            }))
        }
    }
}
