import Atomics
import TollgateCore

/// Whether one instance may receive requests, as published to the event loops.
public struct Availability: Sendable, Equatable {
    public var probeUp: Bool
    /// Monotonic nanoseconds until which the instance is ejected; 0 when it is not.
    public var ejectedUntil: UInt64

    public static let up = Availability(probeUp: true, ejectedUntil: 0)

    @inline(__always)
    public func isAvailable(at now: UInt64) -> Bool { probeUp && now >= ejectedUntil }
}

/// One immutable snapshot of everything all event loops must see: the routing table and the
/// instances' availability. Swapped atomically; a request keeps the snapshot it started with.
public final class GatewayState: AtomicReference, Sendable {
    public let table: RoutingTable
    /// Indexed like `table.instances`.
    public let availability: [Availability]

    public init(table: RoutingTable, availability: [Availability]) {
        precondition(availability.count == table.instances.count)
        self.table = table
        self.availability = availability
    }
}

/// The current `GatewayState`, readable from any thread without a lock.
public final class StateStore: Sendable {
    private let current: ManagedAtomic<GatewayState>

    public init(_ state: GatewayState) {
        self.current = ManagedAtomic(state)
    }

    @inline(__always)
    public func load() -> GatewayState { current.load(ordering: .acquiring) }

    /// Publishes a new snapshot. Only the health monitor's event loop calls this, so writers
    /// never race each other.
    public func store(_ state: GatewayState) { current.store(state, ordering: .releasing) }
}

/// Monotonic time in nanoseconds; injected so that tests can drive time.
public typealias MonotonicClock = @Sendable () -> UInt64
