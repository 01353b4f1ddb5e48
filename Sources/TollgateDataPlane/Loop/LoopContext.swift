import Atomics
import Foundation
import Logging
import NIOCore
import NIOPosix
import TollgateCore
import TollgateRedis

/// Counters of one event loop. Written only by that loop (relaxed atomics, so no lock and no
/// contention), summed by the control plane when read.
public final class LoopCounters: Sendable {
    public let requests = ManagedAtomic<Int>(0)
    public let upstreamRequests = ManagedAtomic<Int>(0)
    public let retries = ManagedAtomic<Int>(0)
    /// Retries not sent because the loop's retry budget was spent (`retry.budget`).
    public let retriesDenied = ManagedAtomic<Int>(0)
    public let upstreamFailures = ManagedAtomic<Int>(0)
    public let clientErrors = ManagedAtomic<Int>(0)
    public let noInstance = ManagedAtomic<Int>(0)
    public let quotaRejections = ManagedAtomic<Int>(0)
    /// Quota sync rounds skipped because Redis could not answer (counting went on locally).
    public let quotaFallbacks = ManagedAtomic<Int>(0)
    public let cacheHits = ManagedAtomic<Int>(0)
    public let cacheMisses = ManagedAtomic<Int>(0)
    public let cacheBypasses = ManagedAtomic<Int>(0)
    public let activeConnections = ManagedAtomic<Int>(0)
    /// Connections refused at `limits.max_connections`.
    public let connectionsRefused = ManagedAtomic<Int>(0)
    public let activeRequests = ManagedAtomic<Int>(0)
    /// Labelled counters and histograms for `/metrics` (see `Metrics/LoopMetrics`).
    public let metrics = LoopMetrics()
    init() {}
}

/// Everything one event loop owns: its balancer states, its in-flight counts, its upstream
/// connection pools. Only that loop touches it, so none of it needs a lock.
final class LoopContext {
    let eventLoop: any EventLoop
    let index: Int
    let loopCount: Int
    let monitor: HealthMonitor
    let counters: LoopCounters
    var logger: Logger
    let clock: MonotonicClock

    private(set) var generation = -1
    private var table: RoutingTable?
    private var balancers: [Balancer?] = []
    /// In-flight requests per instance index of the current table.
    private(set) var inFlight: [Int] = []
    /// The same per lane (the slot reserve's counts).
    private var inFlightByLane: [LaneCounts] = []
    /// Per pool index: the slots kept back from lower lanes for the higher lanes' recent peak.
    private var reserves: [SlotReserve] = []
    private var pools: [UpstreamURL: UpstreamConnectionPool] = [:]
    private var requestSerial: UInt64 = 0
    private let requestPrefix: String
    /// Open client connections, for graceful shutdown.
    var connections: [ObjectIdentifier: GatewayHandler] = [:]
    var draining = false
    /// Usage records not yet handed to the ledger's writer.
    let usageSink: UsageSink?
    private var pendingUsage: [UsageRecord] = []
    private var pendingLastUsed: [String: Int64] = [:]
    static let usageBatch = 256
    /// Calendar windows of the quotas, cached per loop.
    private var quotaCalendar = QuotaCalendar(timeZone: TimeZone(identifier: "UTC")!)

    func quotaWindows(_ settings: QuotaSettings, nowMs: Int64) -> QuotaCalendar.Current {
        quotaCalendar.current(atMs: nowMs, in: settings.timeZone)
    }

    /// This loop's own Redis connection (quotas shared by replicas, the cache); nil without Redis.
    var redis: RedisConnection?
    /// Coalesces identical cache misses across all loops.
    var singleFlight = SingleFlight()
    /// This loop's in-process tier in front of Redis.
    let localCache = LocalCacheTier()
    /// This loop's memory of raw bodies' cache keys.
    let keyMemo = CacheKeyMemo()
    /// Answers `GET /v1/usage`; runs on `threadPool`, never on the loop.
    let usageReporter: UsageReporter?
    let threadPool: NIOThreadPool
    /// Requests waiting for a free instance slot on this loop (`Admission/WaitingLine`).
    let waitingLine: WaitingLine

    init(eventLoop: any EventLoop, index: Int, loopCount: Int, monitor: HealthMonitor, counters: LoopCounters, logger: Logger,
         clock: @escaping MonotonicClock, usageSink: UsageSink?, usageReporter: UsageReporter?, threadPool: NIOThreadPool) {
        self.eventLoop = eventLoop
        self.usageSink = usageSink
        self.usageReporter = usageReporter
        self.threadPool = threadPool
        self.index = index
        self.loopCount = loopCount
        self.monitor = monitor
        self.counters = counters
        self.logger = logger
        self.clock = clock
        let random = UInt32.random(in: 0...UInt32.max)
        self.requestPrefix = "req-" + String(random, radix: 16) + String(index, radix: 16) + "-"
        self.waitingLine = WaitingLine(eventLoop: eventLoop, clock: clock)
        waitingLine.canDispatch = { [unowned self] pool, department, lane in
            self.hasFreeSlot(self.monitor.store.load(), department: department, pool: pool, lane: lane)
        }
    }

    /// A fresh request id: random per process and loop, then a counter.
    func nextRequestID() -> String {
        requestSerial &+= 1
        var id = requestPrefix  // "req-<random><loop>-", one allocation per id
        id += String(requestSerial, radix: 16)
        return id
    }

    /// This loop's metrics for a scrape, on this loop; in-flight counts are indexed like
    /// `state.table.instances`.
    func metricsSnapshot(state: GatewayState) -> LoopMetricsSnapshot {
        // Bring an idle loop up to the table (as its next request would); never back to an
        // older one, should a reload have happened since `state` was read.
        if generation < state.table.generation { adopt(state) }
        let current = generation == state.table.generation ? inFlight : Array(repeating: 0, count: state.table.instances.count)
        return counters.metrics.snapshot(inFlight: current, queues: waitingLine.snapshot())
    }

    /// Brings balancers and in-flight counts to `state`'s table when it changed.
    func adopt(_ state: GatewayState) {
        let t = state.table
        guard t.generation != generation else { return }
        var newInFlight = Array(repeating: 0, count: t.instances.count)
        var newByLane = Array(repeating: LaneCounts(), count: t.instances.count)
        let window = t.configuration.admission.reserveWindow.nanoseconds
        var newReserves = Array(repeating: SlotReserve(window: window), count: t.pools.count)
        if let old = table {
            var byIdentity: [String: (Int, LaneCounts)] = [:]
            for inst in old.instances where inst.index < inFlight.count {
                byIdentity[inst.identity] = (inFlight[inst.index], inFlightByLane[inst.index])
            }
            for inst in t.instances {
                let (n, lanes) = byIdentity[inst.identity] ?? (0, LaneCounts())
                newInFlight[inst.index] = n
                newByLane[inst.index] = lanes
            }
            // A pool keeps what its reserve remembers across a reload (by name).
            for (p, pool) in t.pools.enumerated() {
                if let q = old.pools.firstIndex(where: { $0.name == pool.name }), q < reserves.count {
                    newReserves[p] = reserves[q]
                    newReserves[p].window = window
                }
            }
            let live = Set(t.instances.map(\.url))
            for (url, pool) in pools where !live.contains(url) {
                pool.retire()
                pools[url] = nil
            }
        }
        table = t
        generation = t.generation
        inFlight = newInFlight
        inFlightByLane = newByLane
        reserves = newReserves
        balancers = Array(repeating: nil, count: t.departments.count * t.pools.count)
    }

    /// Picks an instance for `department` in `pool`, skipping unavailable, full and `excluded`
    /// ones; nil too when a request of `lane` may not take a free slot (`SlotReserve`; a retry
    /// passes no lane: it was admitted already).
    func select(_ snapshot: GatewayState, department: Int, pool: Int, excluding excluded: [Int], lane: Lane? = nil) -> Int? {
        adopt(snapshot)
        let state = live(snapshot)
        if let lane, !laneMayTake(state, pool: pool, lane: lane) { return nil }
        let t = state.table
        let candidates = t.departments[department].candidates[pool]
        guard !candidates.isEmpty else { return nil }
        let slot = department * t.pools.count + pool
        var balancer = balancers[slot] ?? Balancer(policy: t.pools[pool].policy, weights: candidates.map(\.weight))
        balancers[slot] = nil  // taken out: its arrays stay unique, no copy on write per request
        let now = clock()
        let choice = balancer.select(
            isAvailable: { c in
                let i = candidates[c].instance
                return state.availability[i].isAvailable(at: now) && !excluded.contains(i) && !self.isFull(state, i)
            },
            // Least-in-flight also counts what the instance says waits inside it.
            inFlight: { c in
                let i = candidates[c].instance
                return self.inFlight[i] + (state.availability[i].load?.waiting ?? 0)
            })
        balancers[slot] = balancer
        return choice.map { candidates[$0].instance }
    }

    /// This loop's share of `instance`'s `max_in_flight` is taken, or the instance itself says it
    /// is saturated (requests wait inside it: `health.metrics_path`) and this loop already has one
    /// there — one each keeps its metrics moving without filling its own queue.
    @inline(__always)
    func isFull(_ state: GatewayState, _ i: Int) -> Bool {
        let limit = state.table.instances[i].maxInFlight
        if limit > 0 && inFlight[i] >= SlotShare.of(limit: limit, loops: loopCount, loop: index, instance: i) { return true }
        if let load = state.availability[i].load, load.saturated, inFlight[i] > 0 { return true }
        return false
    }

    /// Why `select` found nothing: some instance `department` may use is available but full
    /// (the request may wait for a slot), or none is available at all.
    /// With `lane`, the free slots it may not take (kept for higher lanes) count as full.
    func everyEligibleIsFull(_ snapshot: GatewayState, department: Int, pool: Int, excluding excluded: [Int] = [],
                             lane: Lane? = nil) -> Bool {
        adopt(snapshot)
        let state = live(snapshot)
        let now = clock()
        let reserved = lane.map { !laneMayTake(state, pool: pool, lane: $0) } ?? false
        var anyFull = false
        for c in state.table.departments[department].candidates[pool] where c.weight > 0 && !excluded.contains(c.instance) {
            guard state.availability[c.instance].isAvailable(at: now) else { continue }
            if !reserved && !isFull(state, c.instance) { return false }
            anyFull = true
        }
        return anyFull
    }

    /// Whether a request of `lane` may take a free slot of `pool` on this loop: the slots left
    /// free must cover the higher lanes' unused recent peak (`SlotReserve`). Counted over the
    /// pool's available instances, not only those the department may use.
    func laneMayTake(_ state: GatewayState, pool: Int, lane: Lane) -> Bool {
        // Nothing remembered of a higher lane (the usual case: one lane in use): nothing to count.
        guard lane != .interactive, pool < reserves.count, reserves[pool].lapsesAt != nil else { return true }
        let t = state.table
        let now = clock()
        var free = 0, total = 0
        var lanes = LaneCounts()
        for i in t.pools[pool].instances {
            lanes = lanes + inFlightByLane[i]
            let limit = t.instances[i].maxInFlight
            // No limit: nothing is scarce, nothing is kept back.
            guard limit > 0 else { return true }
            guard state.availability[i].isAvailable(at: now) else { continue }
            let share = SlotShare.of(limit: limit, loops: loopCount, loop: index, instance: i)
            total += share
            if !isFull(state, i) { free += max(0, share - inFlight[i]) }
        }
        return reserves[pool].mayTake(lane: lane, free: free, total: total, inFlight: lanes,
                                      minSharePerMille: t.configuration.admission.minSharePerMille, now: Int64(truncatingIfNeeded: now))
    }

    /// The newest snapshot when it has the same table as `snapshot` (same indices), else
    /// `snapshot`: availability and reported load change between a request's start and its
    /// selection, and the waiting line's `hasFreeSlot` must see what `select` sees — else a
    /// slot is granted that selection then refuses.
    @inline(__always)
    func live(_ snapshot: GatewayState) -> GatewayState {
        let current = monitor.store.load()
        return current.table.generation == snapshot.table.generation ? current : snapshot
    }

    /// Whether `department` has an available instance with a free slot in `pool` that a request
    /// of `lane` may take (the waiting line asks).
    func hasFreeSlot(_ state: GatewayState, department: Int, pool: Int, lane: Lane) -> Bool {
        adopt(state)
        let now = clock()
        guard department < state.table.departments.count, pool < state.table.pools.count else { return false }
        return state.table.departments[department].candidates[pool].contains { c in
            c.weight > 0 && state.availability[c.instance].isAvailable(at: now) && !isFull(state, c.instance)
        } && laneMayTake(state, pool: pool, lane: lane)
    }

    /// In-flight bookkeeping of a request of `lane` sent to `instance` (of the current table).
    func began(instance: Int, lane: Lane) {
        inFlight[instance] += 1
        inFlightByLane[instance][lane] += 1
        guard let t = table else { return }
        let pool = t.instances[instance].pool
        var lanes = LaneCounts()
        for i in t.pools[pool].instances { lanes = lanes + inFlightByLane[i] }
        reserves[pool].observe(lanes, now: Int64(truncatingIfNeeded: clock()))
    }

    /// A request of `lane` left `instance`; `generation` is the table it counted itself under.
    /// Its slot goes at once to whoever waits for one on this loop.
    func ended(instance: Int, generation: Int, identity: String, lane: Lane) {
        var freed: Int?
        if generation == self.generation {
            inFlight[instance] -= 1
            inFlightByLane[instance][lane] -= 1
            freed = instance
        } else if let t = table, let i = t.instances.firstIndex(where: { $0.identity == identity }) {
            inFlight[i] = max(0, inFlight[i] - 1)
            inFlightByLane[i][lane] = max(0, inFlightByLane[i][lane] - 1)
            freed = i
        }
        if let freed, let t = table { waitingLine.slotFreed(pool: t.instances[freed].pool) }
    }

    func connectionPool(for url: UpstreamURL) -> UpstreamConnectionPool {
        if let pool = pools[url] { return pool }
        let pool = UpstreamConnectionPool(address: url, eventLoop: eventLoop)
        pools[url] = pool
        return pool
    }

    /// The one place a request that passed authentication ends, whichever path answered it
    /// (forwarded, cached, followed, refused, or left by its client): its reservation is settled
    /// to what it used (`spent`, 0 to give it all back), a single flight it led hands its answer
    /// to the followers (nil: they go upstream themselves), it is counted in the metrics — with
    /// or without a ledger — and its ledger row is kept (handed over every 100 ms or every 256 rows).
    func end(_ record: consuming UsageRecord, settling reservation: QuotaBook.Reservation? = nil, spent: Int = 0, in quotas: QuotaBook? = nil,
             unanswered: Bool = false, completingFlight flight: CacheKey? = nil, with answer: CachedAnswer? = nil) {
        if let reservation, let quotas { quotas.settle(reservation, actualTokens: spent, refundRequest: unanswered) }
        if let flight { singleFlight.complete(flight, with: answer) }
        counters.metrics.count(record)
        guard usageSink != nil else { return }
        // Taken as it is (`consuming`): the record is edited in place and moved into the batch,
        // not copied with a retain of each of its strings.
        record.replica = usageSink?.replica
        // A client's text is stored bounded: a 2 MB `model` is a row of 256 bytes, not 2 MB.
        if let model = record.model, model.utf8.count > Self.maxStoredText { record.model = GatewayError.excerpt(model, limit: Self.maxStoredText) }
        if let prefix = record.keyPrefix { pendingLastUsed[prefix] = record.timeMs }
        pendingUsage.append(consume record)
        if pendingUsage.count >= Self.usageBatch { flushUsage() }
    }

    /// `GET /v1/usage` reports of this loop on the thread pool now, and how many may be.
    var usageReportsRunning = 0
    static let maxUsageReports = 4

    /// The longest client-given text (a model name) kept in a ledger row.
    static let maxStoredText = 256

    /// The ledger's backlog was full at the last flush (read every 100 ms, not per request:
    /// the writer's count sits behind a lock). New requests are refused meanwhile. The writer
    /// keeps up to twice `ledger.max_backlog` rows, so what is admitted within one 100 ms
    /// interval after the bound is reached still has its row (at the default 100,000: ~5 s at
    /// 20,000 requests/s).
    var ledgerSaturated = false

    func flushUsage() {
        guard let sink = usageSink else { return }
        ledgerSaturated = sink.isSaturated
        guard !pendingUsage.isEmpty else { return }
        sink.submit(pendingUsage, lastUsed: pendingLastUsed)
        pendingUsage.removeAll(keepingCapacity: true)
        pendingLastUsed.removeAll(keepingCapacity: true)
    }

    func closeIdleUpstreams() {
        for pool in pools.values { pool.closeAll() }
    }
}
