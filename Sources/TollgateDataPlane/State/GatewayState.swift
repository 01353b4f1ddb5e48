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

/// API keys from the ledger (`tollgate keys create`), resolved against one routing table.
/// Keys of departments the configuration does not name are left out (and logged by whoever
/// builds the table).
public final class KeyTable: Sendable {
    public struct Entry: Sendable, Equatable {
        public let department: Int
        public let prefix: String
        public let expiresMs: Int64?
    }

    private let entries: [KeyDigest: Entry]
    public var count: Int { entries.count }
    /// Departments of keys that no configured department matches.
    public let unknownDepartments: Set<String>

    public static let empty = KeyTable(table: nil, keys: [])

    public init(table: RoutingTable?, keys: [ActiveKey]) {
        var entries: [KeyDigest: Entry] = [:]
        var unknown = Set<String>()
        if let table {
            for key in keys {
                guard let digest = KeyDigest(hex: key.sha256) else { continue }
                guard let department = table.department(named: key.department) else {
                    unknown.insert(key.department)
                    continue
                }
                entries[digest] = Entry(department: department, prefix: key.prefix, expiresMs: key.expiresMs)
            }
        }
        self.entries = entries
        self.unknownDepartments = unknown
    }

    @inline(__always)
    public func lookup(_ digest: KeyDigest) -> Entry? { entries[digest] }
}
