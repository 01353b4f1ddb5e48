import NIOCore
import NIOPosix
import TollgateCore
import TollgateRedis

extension DataPlane {
    /// The quota counters shared by the replicas (Redis), department → meter → use in the
    /// current window, read with one `MGET` on a data-plane loop's own Redis connection.
    ///
    /// With Redis, this replica's own counters only mirror the shared ones at admission (and
    /// include that admission's reservation), so reports of use read Redis. Nil without Redis
    /// or while it does not answer: callers fall back to the local counters.
    public func sharedQuotaUsage(at now: QuotaCalendar.Current) async -> [String: [QuotaMeter: Int]]? {
        guard let redis else { return nil }
        let state = self.state
        var keys: [String] = []
        var slots: [(department: String, meter: QuotaMeter)] = []
        for d in state.table.departments {
            for (meter, _) in SharedQuota.meters(state.quotas.departments[d.index].limits) {
                keys.append(SharedQuota.key(department: d.name, meter: meter, window: now.index(meter.window)))
                slots.append((d.name, meter))
            }
        }
        guard !keys.isEmpty else { return [:] }
        let loop = group.next()
        let command = ["MGET"] + keys
        let reply = loop.flatSubmit { redis.connection(for: loop).send(command: command) }
        guard let values = (try? await reply.get())?.array, values.count == keys.count else { return nil }
        var usage: [String: [QuotaMeter: Int]] = [:]
        for (slot, value) in zip(slots, values) {
            usage[slot.department, default: [:]][slot.meter] = Int(value.int ?? 0)
        }
        return usage
    }
}
