import Atomics
import TollgateCore

/// One immutable snapshot of everything all event loops must see: the routing table and the
/// instances' availability. Swapped atomically; a request keeps the snapshot it started with.
public final class GatewayState: AtomicReference, Sendable {
    public let table: RoutingTable
    /// Indexed like `table.instances`.
    public let availability: [Availability]
    /// Keys from the ledger; keys from the configuration are in `table`.
    public let keys: KeyTable
    /// Quota counters, indexed like `table.departments`.
    public let quotas: QuotaBook

    public init(table: RoutingTable, availability: [Availability], keys: KeyTable = .empty, quotas: QuotaBook? = nil) {
        precondition(availability.count == table.instances.count)
        self.table = table
        self.availability = availability
        self.keys = keys
        self.quotas = quotas ?? QuotaBook(table: table, previous: nil)
    }
}
