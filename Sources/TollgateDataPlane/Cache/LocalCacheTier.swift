import Foundation
import NIOCore
import TollgateCore

/// A bounded in-process tier in front of Redis, one per event loop (used only on its loop, so
/// no lock). An answer found in Redis is also kept here (an answer only stored is not: a miss
/// pays nothing for this tier), and served from here for at most `lifetimeMs` (and never past
/// the entry's own TTL) before Redis is asked again.
///
/// That lifetime is the bound on staleness: a purge through this gateway's admin API clears
/// every loop's tier at once, while a purge or expiry made elsewhere (another replica, or
/// directly in Redis) shows here within `lifetimeMs`. Entries are evicted oldest first beyond
/// `capacity` entries or `byteBudget` bytes of answer bodies.
final class LocalCacheTier {
    /// How long an answer is served from memory before Redis is asked again.
    static let defaultLifetimeMs: Int64 = 2_000

    let capacity: Int
    let byteBudget: Int
    let lifetimeMs: Int64
    private var entries: [String: (answer: CachedAnswer, expiresMs: Int64)] = [:]
    /// Keys in insertion order, for eviction; may hold keys removed since (skipped then).
    private var order = CircularBuffer<String>()
    private var bytes = 0

    init(capacity: Int = 1024, byteBudget: Int = 32 * 1024 * 1024, lifetimeMs: Int64 = LocalCacheTier.defaultLifetimeMs) {
        self.capacity = capacity
        self.byteBudget = byteBudget
        self.lifetimeMs = lifetimeMs
    }

    var count: Int { entries.count }

    /// The answer stored under `redisKey`, unless it expired.
    func get(_ redisKey: String, nowMs: Int64) -> CachedAnswer? {
        guard let entry = entries[redisKey] else { return nil }
        guard entry.expiresMs > nowMs else {
            remove(redisKey)
            return nil
        }
        return entry.answer
    }

    /// Keeps `answer` until `nowMs + lifetimeMs`, or until the entry's own TTL runs out if sooner.
    func put(_ redisKey: String, answer: CachedAnswer, ttlMs: Int64, nowMs: Int64) {
        let size = answer.body.count
        guard size <= byteBudget / 8 else { return }  // a few large answers must not flush the rest
        let (ttlEnd, overflow) = answer.createdMs.addingReportingOverflow(ttlMs)  // an entry's time comes from Redis
        let expires = min(overflow ? Int64.max : ttlEnd, nowMs + lifetimeMs)
        guard expires > nowMs else { return }
        if let old = entries.updateValue((answer, expires), forKey: redisKey) {
            bytes -= old.answer.body.count
        } else {
            order.append(redisKey)
        }
        bytes += size
        while entries.count > capacity || bytes > byteBudget, let oldest = order.popFirst() {
            remove(oldest)
        }
        if order.count > 2 * capacity { order = CircularBuffer(entries.keys) }  // drop keys removed meanwhile
    }

    /// Removes the entries whose Redis key starts with `prefix`, or all of them.
    func purge(prefix: String?) {
        guard let prefix else {
            entries.removeAll()
            order.removeAll()
            bytes = 0
            return
        }
        for key in entries.keys where key.hasPrefix(prefix) { remove(key) }
        order = CircularBuffer(entries.keys)
    }

    private func remove(_ key: String) {
        if let old = entries.removeValue(forKey: key) { bytes -= old.answer.body.count }
    }
}
