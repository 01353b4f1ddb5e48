import NIOConcurrencyHelpers
import TollgateCore

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
