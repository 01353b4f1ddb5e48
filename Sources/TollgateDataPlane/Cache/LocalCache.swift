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

/// Raw request body → its cache key and prompt preview, per event loop: a body asked again (a
/// repeated prompt, byte for byte, found in Redis) is not canonicalized, hashed or read again.
/// Found by a `Hasher` of the body (SipHash, seeded per process) and confirmed by comparing the
/// bytes, so a collision can never hand one body another's key; the namespace, endpoint and
/// model are part of the match.
final class CacheKeyMemo {
    struct Entry {
        let body: [UInt8]
        let namespace: String
        let endpoint: String
        let model: String
        let key: CacheKey
        let redisKey: String
        /// The ledger's prompt preview, read from the same body.
        let preview: String?
    }

    let capacity: Int
    let maxBodyBytes: Int
    private var entries: [Int: Entry] = [:]

    init(capacity: Int = 1024, maxBodyBytes: Int = 8 * 1024) {
        self.capacity = capacity
        self.maxBodyBytes = maxBodyBytes
    }

    var count: Int { entries.count }

    /// The slot `body` hashes to, and the entry there if it is this very request.
    func lookup(_ body: UnsafeRawBufferPointer, namespace: String, endpoint: String, model: String) -> (slot: Int, entry: Entry?) {
        var hasher = Hasher()
        hasher.combine(bytes: body)
        hasher.combine(namespace)
        hasher.combine(endpoint)
        hasher.combine(model)
        let slot = hasher.finalize()
        guard let entry = entries[slot], entry.body.count == body.count, entry.namespace == namespace,
              entry.endpoint == endpoint, entry.model == model,
              entry.body.withUnsafeBytes({ body.count == 0 || memcmp($0.baseAddress!, body.baseAddress!, body.count) == 0 })
        else { return (slot, nil) }
        return (slot, entry)
    }

    /// Remembers `entry` in `slot` (from `lookup`); a full memo forgets an arbitrary entry.
    func store(_ entry: Entry, slot: Int) {
        guard entry.body.count <= maxBodyBytes else { return }
        if entries[slot] == nil && entries.count >= capacity, let any = entries.keys.first {
            entries[any] = nil
        }
        entries[slot] = entry
    }
}
