import NIOCore
import TollgateCore

/// One instance's state at one instant: its published `Availability` and the health monitor's
/// counters. The control plane's `/healthz` and the admin overview both read it here and encode
/// it in their own documented shapes (snake_case there, camelCase in the overview); the data
/// plane's own `/healthz` reads the same `Availability` on its event loop.
public struct InstanceStatus: Sendable, Equatable {
    /// Index into the routing table's `instances`.
    public let index: Int
    public let name: String
    public let pool: String
    public let url: String
    public let labels: [String: String]
    public let weight: Int
    /// Probe up and not ejected.
    public let available: Bool
    public let probeUp: Bool
    public let ejected: Bool
    public let ejections: Int
    public let recentFailures: Int

    /// Every instance of `state`'s routing table, at monotonic `now` (nanoseconds), with the
    /// health monitor's `health` (`HealthMonitor.snapshot()`, keyed by instance identity).
    public static func all(in state: GatewayState, health: [String: InstanceHealth],
                           now: UInt64 = NIODeadline.now().uptimeNanoseconds) -> [InstanceStatus] {
        let table = state.table
        return table.instances.map { inst in
            let a = state.availability[inst.index]
            let h = health[inst.identity]
            return InstanceStatus(
                index: inst.index, name: inst.name, pool: table.pools[inst.pool].name, url: inst.url.description,
                labels: inst.labels, weight: inst.weight, available: a.isAvailable(at: now), probeUp: a.probeUp,
                ejected: now < a.ejectedUntil, ejections: h?.ejections ?? 0, recentFailures: h?.recentFailures.count ?? 0)
        }
    }
}
