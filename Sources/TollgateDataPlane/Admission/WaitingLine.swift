import NIOCore
import TollgateCore

/// A request waiting in the gateway for a free instance slot: told when it may go, or that its
/// lane's deadline passed. Its exchange is the waiter; the connection only knows it is forwarding.
protocol SlotWaiter: AnyObject {
    /// A slot this request may use is free now: select again (it will find one).
    func slotGranted(waitedNs: Int64)
    /// The lane's queue timeout passed while every instance stayed full.
    func queueTimedOut(waitedNs: Int64)
}

/// The waiting line of one event loop (thread-per-core: no lock, no hop): one `AdmissionQueue`
/// per pool, the pure policy of who goes next, and one timer for the deadlines. Only the loop
/// that owns it touches it. Slots are this loop's share of each instance's `max_in_flight`
/// (`SlotShare`), so a slot freed here is given here, the moment it frees.
final class WaitingLine {
    struct Waiting {
        weak var waiter: (any SlotWaiter)?
        let departmentName: String
    }

    private var queues: [Int: AdmissionQueue<Waiting>] = [:]
    private var timer: Scheduled<Void>?
    private var timerAt: Int64?
    private var dispatching = false
    /// Pools whose slots freed while a dispatch was running (handed out before it returns).
    private var pending: Set<Int> = []
    /// Retries under way on this loop (the retry budget's numerator).
    var retrying = 0
    private let eventLoop: any EventLoop
    private let clock: MonotonicClock
    /// Whether `department` has a free instance it may use in `pool` and a request of `lane` may
    /// take it (`LoopContext.hasFreeSlot`).
    var canDispatch: (_ pool: Int, _ department: Int, _ lane: Lane) -> Bool = { _, _, _ in false }
    /// Waits, dispatches and sheds per lane and department.
    private var metrics = AdmissionMetrics()

    init(eventLoop: any EventLoop, clock: @escaping MonotonicClock) {
        self.eventLoop = eventLoop
        self.clock = clock
    }

    var now: Int64 { Int64(truncatingIfNeeded: clock()) }

    /// This loop's figures with the lengths of its lines now (for a scrape, on the loop).
    func snapshot() -> [QueueFigures.Key: QueueFigures] {
        var out = metrics.figures
        for q in queues.values {
            q.forEachWaiting { entry in
                out[QueueFigures.Key(lane: entry.lane, department: entry.item.departmentName), default: QueueFigures()].waiting += 1
            }
        }
        return out
    }

    var count: Int { queues.values.reduce(0) { $0 + $1.count } }

    /// Puts a request in line; `.full` when its lane is at its bound (this loop's share of it).
    func enqueue(_ waiter: any SlotWaiter, pool: Int, department: Int, departmentName: String, weight: Int, lane: Lane, cost: Int,
                 settings: AdmissionSettings, boundShare: Int) -> AdmissionQueue<Waiting>.Offer {
        // Mutated in place (the dictionary's modify accessor): copying a line out and back would
        // copy its arrays on every request.
        let t = settings[lane].timeout.nanoseconds
        let at = now
        queues[pool, default: AdmissionQueue(minSharePerMille: settings.minSharePerMille)].minSharePerMille = settings.minSharePerMille
        let offer = queues[pool]!.enqueue(department: department, weight: weight, lane: lane, cost: cost, now: at, timeout: t, bound: boundShare,
                                          item: Waiting(waiter: waiter, departmentName: departmentName))
        switch offer {
        case .queued: arm(at: at + t)
        case .full: metrics.full(lane: lane, department: departmentName)
        }
        return offer
    }

    /// A request that went straight to a free slot is charged in its lane's fair shares all the same.
    func charge(pool: Int, department: Int, weight: Int, lane: Lane, cost: Int) {
        // Nobody ever waited in this pool here: shares need no history. (Looked up before the
        // in-place update: `queues[pool]?.…` on a missing pool allocated its accessor's frame.)
        guard queues[pool] != nil else { return }
        queues[pool]!.charge(department: department, weight: weight, lane: lane, cost: cost)
    }

    func cancel(_ id: UInt64, pool: Int) {
        _ = queues[pool]?.cancel(id)
    }

    /// The real usage of a request that waited or was charged: its department's tag moves by the
    /// estimate's error.
    func settle(pool: Int, department: Int, lane: Lane, estimated: Int, actual: Int) {
        guard queues[pool] != nil, estimated != actual else { return }
        queues[pool]!.settle(department: department, lane: lane, estimated: estimated, actual: actual)
    }

    /// A slot of `pool` was freed (or may have been: a reload, an instance back): hand out every
    /// slot someone waiting can use. Re-entrant calls (a dispatched request that fails at once
    /// frees its slot again) are folded into the running loop.
    func slotFreed(pool: Int) {
        guard queues[pool]?.isEmpty == false else { return }
        if dispatching {
            pending.insert(pool)
            return
        }
        dispatching = true
        defer { dispatching = false }
        var next: Int? = pool
        while let p = next {
            let canDispatch = self.canDispatch
            while let entry = queues[p]?.dispatch(canDispatch: { canDispatch(p, $0, $1) }) {
                let waited = now - entry.enqueuedAt
                metrics.dispatched(lane: entry.lane, department: entry.item.departmentName, waitedNs: waited)
                // A waiter whose connection is gone was cancelled already; a weak nil is skipped.
                entry.item.waiter?.slotGranted(waitedNs: waited)
            }
            next = pending.popFirst()
        }
    }

    /// Every pool: used by the timer, which also catches slots that came free without a request
    /// ending (an instance back up, a reload raising a limit).
    private func dispatchAll() {
        for pool in Array(queues.keys) { slotFreed(pool: pool) }
    }

    private func arm(at deadline: Int64) {
        // At most every 250 ms while anyone waits: deadlines are kept to that, and slots freed
        // without a request ending are found.
        let at = min(deadline, now + 250_000_000)
        if let current = timerAt, current <= at, timer != nil { return }
        timer?.cancel()
        timerAt = at
        let delay = TimeAmount.nanoseconds(max(0, at - now))
        timer = eventLoop.assumeIsolated().scheduleTask(in: delay) { [weak self] in self?.fire() }
    }

    private func fire() {
        timer = nil
        timerAt = nil
        let t = now
        for pool in Array(queues.keys) {
            let expired = queues[pool]?.expire(now: t) ?? []
            for entry in expired {
                metrics.timedOut(lane: entry.lane, department: entry.item.departmentName, waitedNs: t - entry.enqueuedAt)
                entry.item.waiter?.queueTimedOut(waitedNs: t - entry.enqueuedAt)
            }
        }
        dispatchAll()
        if let next = queues.values.compactMap(\.nextDeadline).min() { arm(at: next) }
    }

    func stop() {
        timer?.cancel()
        timer = nil
        timerAt = nil
    }
}

/// What the waiting lines count, per lane and department: waits, dispatches, sheds, and (at
/// a scrape) the length. One loop's figures are confined to it and read by a scrape's hop; the
/// control plane adds the loops' up.
public struct QueueFigures: Sendable, Equatable {
    public struct Key: Hashable, Sendable, Comparable {
        public var lane: Lane
        public var department: String
        public init(lane: Lane, department: String) {
            self.lane = lane
            self.department = department
        }
        public static func < (a: Key, b: Key) -> Bool { (a.lane, a.department) < (b.lane, b.department) }
    }

    /// Waiting now (filled in by a scrape).
    public var waiting = 0
    /// Requests that got a slot after waiting.
    public var dispatched = 0
    /// Refused after waiting the lane's queue timeout.
    public var timedOut = 0
    /// Refused at once: the lane's queue was at its bound.
    public var full = 0
    /// Waits of the requests that left the line (dispatched or timed out), like the latency histograms.
    public var wait = HistogramSnapshot(boundsMicros: LoopHistogram.latencyBoundsMicros,
                                        counts: Array(repeating: 0, count: LoopHistogram.latencyBoundsMicros.count + 1), sumMicros: 0)
    public var shed: Int { timedOut + full }

    mutating func observe(micros: Int) {
        let bounds = wait.boundsMicros
        var i = 0
        while i < bounds.count && micros > bounds[i] { i += 1 }
        wait.counts[i] += 1
        wait.sumMicros &+= max(0, micros)
    }

    mutating func add(_ other: QueueFigures) {
        waiting += other.waiting
        dispatched += other.dispatched
        timedOut += other.timedOut
        full += other.full
        wait.add(other.wait)
    }
}

struct AdmissionMetrics {
    var figures: [QueueFigures.Key: QueueFigures] = [:]

    mutating func dispatched(lane: Lane, department: String, waitedNs: Int64) {
        let key = QueueFigures.Key(lane: lane, department: department)
        figures[key, default: QueueFigures()].dispatched += 1
        figures[key, default: QueueFigures()].observe(micros: Int(waitedNs / 1000))
    }

    mutating func timedOut(lane: Lane, department: String, waitedNs: Int64) {
        let key = QueueFigures.Key(lane: lane, department: department)
        figures[key, default: QueueFigures()].timedOut += 1
        figures[key, default: QueueFigures()].observe(micros: Int(waitedNs / 1000))
    }

    mutating func full(lane: Lane, department: String) {
        figures[QueueFigures.Key(lane: lane, department: department), default: QueueFigures()].full += 1
    }
}
