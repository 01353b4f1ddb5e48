import Foundation
import NIOConcurrencyHelpers
import NIOCore
import TollgateCore
import TollgateLedger
import TollgateRedis

/// What the response cache does for one forwarded request.
struct CachePlan {
    let key: CacheKey
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
/// page's most frequent prompts. Only computed for cacheable requests.
func promptPreview(body: ByteBuffer, range: Range<Int>?) -> String? {
    guard let range, let bytes = body.getBytes(at: body.readerIndex + range.lowerBound, length: range.count),
          let value = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]) else { return nil }
    func text(_ content: Any?) -> String? {
        if let s = content as? String { return s }
        if let parts = content as? [[String: Any]] {
            return parts.compactMap { $0["text"] as? String }.joined(separator: " ")
        }
        return nil
    }
    if let messages = value as? [[String: Any]] {
        let last = messages.last { ($0["role"] as? String) == "user" } ?? messages.last
        return text(last?["content"]).map(UsageRecord.preview(of:))
    }
    if let prompt = value as? String { return UsageRecord.preview(of: prompt) }
    if let prompts = value as? [String], let first = prompts.first { return UsageRecord.preview(of: first) }
    return nil
}
