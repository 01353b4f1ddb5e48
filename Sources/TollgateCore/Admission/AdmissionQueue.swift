/// The gateway's waiting line for one pool on one event loop, as a pure state machine: no I/O,
/// no clock of its own (every call that needs the time is given `now`, in monotonic
/// nanoseconds), no lock (one loop owns it). `Item` is whatever the data plane needs to resume
/// a request; the policy never looks at it.
///
/// Who gets a freed slot (`dispatch`):
/// 1. **Strict priority between lanes** (`Lane`): the highest lane with a waiting request that
///    can use a free instance — as the Gateway API Inference Extension's priority bands and SMG's
///    priority scheduler.
/// 2. **Starvation guard**: every dispatch while a lower lane waits gives that lane `minShare`
///    of a credit (in per mille); a lane whose credit reaches a whole slot gets the next one. So
///    with `minShare` 10%, a waiting lower lane gets at least one slot in ten, whatever waits above it.
/// 3. **Fair shares inside a lane**: start-time fair queuing (SFQ; P. Goyal, H. M. Vin, H. Cheng,
///    "Start-time Fair Queuing: A Scheduling Algorithm for Integrated Services Packet Switching
///    Networks", SIGCOMM 1996). Each department is a flow with a weight; a request's cost is its
///    estimated tokens (prompt + `max_tokens`, the quota's `reservationEstimate`). The flow's head
///    gets the start tag `S = max(V, F)`, where `F` is the flow's finish tag; the smallest start tag
///    goes first (ties: the earlier arrival), then `V = S` and `F = S + cost / weight`. A department
///    of long generations thus waits longer between slots than one of short answers, and an idle
///    department cannot save up credit (its `F` falls behind `V`). SFQ rather than deficit
///    round-robin: it needs no quantum tuned to the costs (which vary from 10 to 100,000 tokens)
///    and a slot freed on an instance only some departments may use is still given in tag order
///    among those that can. When a request ends, `settle` moves its flow's finish tag by the
///    difference between the estimate and the real usage, so the next request pays for the error.
/// 4. **Deadlines and bounds**: every request carries its lane's deadline (`expire` removes those
///    past it) and a lane holds at most its bound (`enqueue` refuses past it); `cancel` removes a
///    request whose client left.
public struct AdmissionQueue<Item> {
    /// One waiting request.
    public struct Entry {
        public let id: UInt64
        public let department: Int
        public let lane: Lane
        public let cost: Int
        public let enqueuedAt: Int64
        public let deadline: Int64
        public let item: Item
    }

    public enum Offer: Equatable {
        case queued(id: UInt64)
        /// The lane holds its bound already.
        case full
    }

    private struct Flow {
        var queue: [Entry] = []
        var head = 0
        var finish: Double = 0
        var weight = 1
        var isEmpty: Bool { head >= queue.count }
        var count: Int { queue.count - head }
        var first: Entry? { isEmpty ? nil : queue[head] }

        mutating func popFirst() -> Entry {
            let e = queue[head]
            head += 1
            // Compact now and then: amortised O(1) removal without a deque type.
            if head > 32 && head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
            return e
        }

        mutating func remove(where match: (Entry) -> Bool) -> [Entry] {
            var removed: [Entry] = []
            var kept: [Entry] = []
            kept.reserveCapacity(count)
            for e in queue[head...] {
                if match(e) { removed.append(e) } else { kept.append(e) }
            }
            queue = kept
            head = 0
            return removed
        }
    }

    private struct LaneState {
        /// Flows by department index.
        var flows: [Int: Flow] = [:]
        /// SFQ's virtual time: the start tag of the last request dispatched from this lane.
        var virtualTime: Double = 0
        var count = 0
        /// The starvation guard's credit, in per mille of a slot.
        var credit = 0
    }

    private var lanes = Array(repeating: LaneState(), count: Lane.allCases.count)
    private var nextID: UInt64 = 0
    /// Per mille of freed slots a waiting lower lane is guaranteed (0…1000).
    public var minSharePerMille: Int

    public init(minSharePerMille: Int = 100) {
        self.minSharePerMille = min(1000, max(0, minSharePerMille))
    }

    /// Requests waiting, in all lanes.
    public var count: Int { lanes.reduce(0) { $0 + $1.count } }
    public var isEmpty: Bool { count == 0 }
    public func count(lane: Lane) -> Int { lanes[lane.rawValue].count }
    public func count(lane: Lane, department: Int) -> Int { lanes[lane.rawValue].flows[department]?.count ?? 0 }

    /// Calls `body` with every waiting request (any order): for gauges.
    public func forEachWaiting(_ body: (Entry) -> Void) {
        for lane in lanes where lane.count > 0 {
            for flow in lane.flows.values where !flow.isEmpty {
                for e in flow.queue[flow.head...] { body(e) }
            }
        }
    }

    /// Puts a request in line: `timeout` after `now` it expires; `bound` is the lane's length bound.
    public mutating func enqueue(department: Int, weight: Int, lane: Lane, cost: Int, now: Int64, timeout: Int64, bound: Int,
                                 item: Item) -> Offer {
        guard lanes[lane.rawValue].count < bound else { return .full }
        nextID &+= 1
        let entry = Entry(id: nextID, department: department, lane: lane, cost: max(1, cost), enqueuedAt: now,
                          deadline: now.addingReportingOverflow(max(0, timeout)).overflow ? Int64.max : now + max(0, timeout), item: item)
        var flow = lanes[lane.rawValue].flows[department] ?? Flow()
        flow.weight = max(1, weight)
        flow.queue.append(entry)
        lanes[lane.rawValue].flows[department] = flow
        lanes[lane.rawValue].count += 1
        return .queued(id: entry.id)
    }

    /// The request that gets a freed slot, removed from the line; nil when nobody waiting can use
    /// one (`canDispatch(department)`: a free instance that department may use exists).
    public mutating func dispatch(canDispatch: (Int) -> Bool) -> Entry? {
        dispatch { department, _ in canDispatch(department) }
    }

    /// The same, eligibility asked per department and lane (`canDispatch(department, lane)`: a
    /// free instance the department may use exists, and the lane may take it — `SlotReserve`).
    public mutating func dispatch(canDispatch: (Int, Lane) -> Bool) -> Entry? {
        // Eligibility per department and lane, asked once per call.
        var asked: [Int: Bool] = [:]
        var lane = 0
        func eligible(_ d: Int) -> Bool {
            let key = d * Lane.allCases.count + lane
            if let known = asked[key] { return known }
            let v = canDispatch(d, Lane(rawValue: lane)!)
            asked[key] = v
            return v
        }
        func laneEligible(_ l: Int) -> Bool {
            lane = l
            return lanes[l].flows.contains { !$0.value.isEmpty && eligible($0.key) }
        }
        guard let top = lanes.indices.first(where: { lanes[$0].count > 0 && laneEligible($0) }) else { return nil }
        // The guard: every waiting lane below the top one earns its share of this slot.
        var chosen = top
        var best = 0
        for l in lanes.indices where l > top {
            if lanes[l].count == 0 {
                lanes[l].credit = 0
                continue
            }
            // Capped at two slots: a lane that lost a tie to another starved lane keeps what it
            // earned, but a long wait cannot turn into a burst.
            lanes[l].credit = min(2000, lanes[l].credit + minSharePerMille)
            if lanes[l].credit >= 1000 && lanes[l].credit > best && laneEligible(l) {
                chosen = l
                best = lanes[l].credit
            }
        }
        if chosen != top { lanes[chosen].credit -= 1000 }
        lane = chosen
        return takeFair(lane: chosen, eligible: eligible)
    }

    /// SFQ inside one lane: the eligible flow whose head has the smallest start tag.
    private mutating func takeFair(lane l: Int, eligible: (Int) -> Bool) -> Entry? {
        let v = lanes[l].virtualTime
        var pick: (department: Int, start: Double, id: UInt64)?
        for (d, flow) in lanes[l].flows {
            guard let head = flow.first, eligible(d) else { continue }
            let start = max(v, flow.finish)
            if let p = pick, (p.start, p.id) <= (start, head.id) { continue }
            pick = (d, start, head.id)
        }
        guard let pick else { return nil }
        var flow = lanes[l].flows[pick.department]!
        let entry = flow.popFirst()
        flow.finish = pick.start + Double(entry.cost) / Double(flow.weight)
        lanes[l].flows[pick.department] = flow
        lanes[l].virtualTime = pick.start
        lanes[l].count -= 1
        return entry
    }

    /// A request of `department` that found a free slot with nobody waiting before it: it is
    /// charged as if it had passed through the line (SFQ's tags move as for a dispatch), so a
    /// department cannot gain its share back by arriving when the line happens to be empty.
    public mutating func charge(department: Int, weight: Int, lane: Lane, cost: Int) {
        var flow = lanes[lane.rawValue].flows[department] ?? Flow()
        flow.weight = max(1, weight)
        let start = max(lanes[lane.rawValue].virtualTime, flow.finish)
        flow.finish = start + Double(max(1, cost)) / Double(flow.weight)
        lanes[lane.rawValue].flows[department] = flow
        lanes[lane.rawValue].virtualTime = start
    }

    /// Removes a waiting request (its client left). Nil when it is no longer in line.
    public mutating func cancel(_ id: UInt64) -> Entry? {
        for l in lanes.indices {
            for (d, var flow) in lanes[l].flows where !flow.isEmpty {
                guard flow.queue[flow.head...].contains(where: { $0.id == id }) else { continue }
                let removed = flow.remove { $0.id == id }
                lanes[l].flows[d] = flow
                lanes[l].count -= removed.count
                return removed.first
            }
        }
        return nil
    }

    /// Removes and returns every request whose deadline is at or before `now`, oldest first.
    public mutating func expire(now: Int64) -> [Entry] {
        var expired: [Entry] = []
        for l in lanes.indices where lanes[l].count > 0 {
            for (d, var flow) in lanes[l].flows where !flow.isEmpty {
                guard flow.queue[flow.head...].contains(where: { $0.deadline <= now }) else { continue }
                let removed = flow.remove { $0.deadline <= now }
                lanes[l].flows[d] = flow
                lanes[l].count -= removed.count
                expired += removed
            }
        }
        return expired.sorted { $0.id < $1.id }
    }

    /// The earliest deadline in line, for the loop's one timer.
    public var nextDeadline: Int64? {
        var earliest: Int64?
        for lane in lanes where lane.count > 0 {
            for flow in lane.flows.values where !flow.isEmpty {
                for e in flow.queue[flow.head...] where earliest == nil || e.deadline < earliest! { earliest = e.deadline }
            }
        }
        return earliest
    }

    /// A dispatched request of `department` in `lane` ended having used `actual` tokens where
    /// `estimated` were charged: its flow's finish tag moves by the difference, so the department's
    /// next request starts earlier (it used less) or later (it used more).
    public mutating func settle(department: Int, lane: Lane, estimated: Int, actual: Int) {
        guard var flow = lanes[lane.rawValue].flows[department], estimated != actual else { return }
        flow.finish = max(0, flow.finish + Double(actual - estimated) / Double(flow.weight))
        lanes[lane.rawValue].flows[department] = flow
    }
}
