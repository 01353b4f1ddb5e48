import Atomics

/// What the fleet layer (keys, events, rollups shared through Redis) counts, for `/metrics`.
/// Written by the fleet's own threads, never by a request.
public final class FleetCounters: Sendable {
    /// Fleet messages received from other replicas and acted on.
    public let eventsReceived = ManagedAtomic<Int>(0)
    /// Messages dropped: malformed, too long, or of an unknown kind (logged).
    public let eventsDropped = ManagedAtomic<Int>(0)
    /// Messages this replica published.
    public let eventsPublished = ManagedAtomic<Int>(0)
    /// Key registry syncs run, and those that failed (Redis or the ledger not answering).
    public let keySyncs = ManagedAtomic<Int>(0)
    public let keySyncFailures = ManagedAtomic<Int>(0)
    /// Registry entries refused (out of range, conflicting digests).
    public let keyRecordsRefused = ManagedAtomic<Int>(0)
    /// Rollup publications that failed (kept for the next one), and rollup cells dropped
    /// because the backlog was full (`FleetRollups.maxCells`).
    public let rollupPublishFailures = ManagedAtomic<Int>(0)
    public let rollupCellsDropped = ManagedAtomic<Int>(0)
    /// 1 while the pub/sub subscription is up.
    public let subscribed = ManagedAtomic<Int>(0)

    public init() {}
}
