import Atomics

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
