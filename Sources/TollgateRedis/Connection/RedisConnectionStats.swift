import Atomics

/// Counters shared by the connections of a `RedisClientGroup`, readable from any thread.
/// Written only on connect/disconnect transitions, never per command.
final class RedisConnectionStats: Sendable {
    let available = ManagedAtomic<Int>(0)
    let outages = ManagedAtomic<Int>(0)

    init() {}

    func connectionBecameAvailable() {
        available.wrappingIncrement(ordering: .relaxed)
    }

    func connectionWentDown() {
        available.wrappingDecrement(ordering: .relaxed)
        outages.wrappingIncrement(ordering: .relaxed)
    }

    /// Closed on purpose: not an outage.
    func connectionClosed() {
        available.wrappingDecrement(ordering: .relaxed)
    }
}
