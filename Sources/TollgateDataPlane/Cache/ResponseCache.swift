import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
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

/// Concurrent identical misses on this gateway send one upstream request: the first leads,
/// the others wait for its answer. Process-wide, so that identical requests on different event
/// loops coalesce too; the lock is taken only on the cache-miss path (which goes on to an
/// upstream call), never on a hit or an uncacheable request.
final class SingleFlight: Sendable {
    typealias Waiter = @Sendable (CachedAnswer?) -> Void
    private let flights = NIOLockedValueBox<[CacheKey: [Waiter]]>([:])

    /// `true`: lead (go upstream). `false`: `waiter` is called with the leader's answer, or
    /// with nil when the leader has none to share (then go upstream yourself).
    func join(_ key: CacheKey, waiter: @escaping Waiter) -> Bool {
        flights.withLockedValue { flights in
            if flights[key] != nil {
                flights[key]!.append(waiter)
                return false
            }
            flights[key] = []
            return true
        }
    }

    func complete(_ key: CacheKey, with answer: CachedAnswer?) {
        let waiters = flights.withLockedValue { $0.removeValue(forKey: key) } ?? []
        for waiter in waiters { waiter(answer) }
    }
}

/// The first 120 characters of the last user message (chat) or of the prompt, for the admin
/// page's most frequent prompts. Only computed for cacheable requests; read with the request
/// scanner's parser (a Foundation JSON parse here cost ~4% of a cache hit).
func promptPreview(body: ByteBuffer, range: Range<Int>?) -> String? {
    guard let range else { return nil }
    return body.withUnsafeReadableBytes { raw -> String? in
        guard range.upperBound <= raw.count else { return nil }
        // As much as any department's policy may keep; each row applies its own policy
        // (`PromptPrivacy.preview`), since a shared cache serves several departments.
        return RequestScanner.promptText(UnsafeRawBufferPointer(rebasing: raw[range])).map { String($0.prefix(PromptPrivacy.maxLength)) }
    }
}

/// The Redis key of an entry; the namespace stays readable so that purges can match it.
func cacheRedisKey(namespace: String, key: CacheKey) -> String {
    "tollgate:cache:" + namespace + ":" + key.hex
}

extension DataPlane {
    /// Deletes the cached answers of one department (its namespace), or all of them, from Redis
    /// and from every loop's in-process tier; returns how many Redis entries were removed. Runs
    /// SCAN + UNLINK on a data-plane loop's own connection.
    public func purgeCache(department: String?) async throws -> Int {
        guard let redis else { throw RedisError.unavailable }
        let loop = group.next()
        let pattern = department.map { "tollgate:cache:department:\($0):*" } ?? "tollgate:cache:*"
        var cursor = "0"
        var removed = 0
        repeat {
            let current = cursor
            let (next, keys) = try await loop.submit { () -> EventLoopFuture<RESPValue> in
                redis.connection(for: loop).send(command: ["SCAN", current, "MATCH", pattern, "COUNT", "500"])
            }.flatMap { $0 }.flatMapThrowing { value -> (String, [String]) in
                guard let parts = value.array, parts.count == 2, let next = parts[0].string else {
                    throw RedisError.protocolError("SCAN answered \(value)")
                }
                return (next, (parts[1].array ?? []).compactMap(\.string))
            }.get()
            if !keys.isEmpty {
                let n = try await loop.submit { () -> EventLoopFuture<RESPValue> in
                    redis.connection(for: loop).send(command: ["UNLINK"] + keys)
                }.flatMap { $0 }.get()
                removed += Int(n.int ?? 0)
            }
            cursor = next
        } while cursor != "0"
        // Then every loop's in-process tier (after Redis, so that no loop refills it from there).
        await purgeLocalCaches(prefix: department.map { "tollgate:cache:department:\($0):" })
        return removed
    }
}
