import Logging
import NIOConcurrencyHelpers
import NIOCore
import TollgateCore

/// Builds and publishes the `GatewayState` every loop reads with one atomic load: the routing
/// table, each instance's availability, the keys from the ledger and the quota book. It is the
/// only writer of the `StateStore`, and it runs on one event loop (the health monitor's), so
/// snapshots never race: a reload, new keys, an instance marked down or up all come here.
public final class SnapshotPublisher: Sendable {
    public let eventLoop: any EventLoop
    public let store: StateStore
    let logger: Logger
    private let parts: NIOLoopBoundBox<Parts>
    /// Set when the data plane shuts down: keys installed after that (the ledger's refresh
    /// thread may wake between the loops' end and its own) are refused, not submitted to a
    /// loop that will never run them.
    private let stopped = NIOLockedValueBox(false)

    /// Keys installed after the data plane stopped.
    public struct Stopped: Error {}

    /// What a snapshot is built from, besides the table.
    final class Parts {
        var activeKeys: [ActiveKey] = []
        var keyTable = KeyTable.empty
        var quotas: QuotaBook?
        /// By instance identity; an instance not listed is up.
        var availability: [String: Availability] = [:]
    }

    /// Publishes the initial snapshot for `table` at once (every instance up, no ledger keys).
    init(table: RoutingTable, eventLoop: any EventLoop, logger: Logger) {
        self.eventLoop = eventLoop
        self.logger = logger
        self.store = StateStore(GatewayState(table: table, availability: Array(repeating: .up, count: table.instances.count)))
        self.parts = NIOLoopBoundBox.makeBoxSendingValue(Parts(), eventLoop: eventLoop)
    }

    /// A new routing table (start, reload) with the availability of its instances. On the loop.
    func install(_ table: RoutingTable, availability: [String: Availability]) {
        let p = parts.value
        p.availability = availability
        p.keyTable = KeyTable(table: table, keys: p.activeKeys)
        p.quotas = QuotaBook(table: table, previous: p.quotas ?? store.load().quotas)
        publish(table)
    }

    /// An instance's availability changed (probes, ejection). On the loop.
    func availabilityChanged(_ availability: [String: Availability]) {
        parts.value.availability = availability
        publish(store.load().table)
    }

    /// Swaps in the ledger's active keys (after `keys create`/`revoke`). The future completes
    /// once the new snapshot is published, so that a revocation answered by the admin API is in
    /// force. Throws `Stopped` once the data plane has stopped (a future on its loops would never
    /// complete, nor would anything chained to it).
    @discardableResult
    public func installKeys(_ keys: [ActiveKey]) throws -> EventLoopFuture<KeyTable> {
        // Checked and submitted under the lock that `stop` takes, so no submission can follow it.
        try stopped.withLockedValue { stopped in
            if stopped { throw Stopped() }
            return submitKeys(keys)
        }
    }

    /// Refuses further key installs; called before the loops shut down.
    func stop() {
        stopped.withLockedValue { $0 = true }
    }

    private func submitKeys(_ keys: [ActiveKey]) -> EventLoopFuture<KeyTable> {
        eventLoop.submit {
            let p = self.parts.value
            p.activeKeys = keys
            let table = self.store.load().table
            p.keyTable = KeyTable(table: table, keys: keys)
            if !p.keyTable.unknownDepartments.isEmpty {
                self.logger.warning("keys of departments not in the configuration are ignored", metadata: [
                    "departments": "\(p.keyTable.unknownDepartments.sorted().joined(separator: ","))",
                ])
            }
            self.publish(table)
            return p.keyTable
        }
    }

    private func publish(_ table: RoutingTable) {
        let p = parts.value
        let availability = table.instances.map { p.availability[$0.identity] ?? .up }
        store.store(GatewayState(table: table, availability: availability, keys: p.keyTable, quotas: p.quotas))
    }
}
