import TollgateCore
import XCTest

/// Who gets the next freed slot, for every interleaving that matters: strict priority, the
/// starvation guard's share, weighted fairness by cost (SFQ), deadlines, the bound and cancel.
/// The clock is the `now` each call is given.
final class AdmissionQueueTests: XCTestCase {
    typealias Queue = AdmissionQueue<String>
    let second: Int64 = 1_000_000_000
    let all: (Int) -> Bool = { _ in true }

    @discardableResult
    func put(_ q: inout Queue, _ name: String, department: Int = 0, weight: Int = 1, lane: Lane = .standard, cost: Int = 100,
             now: Int64 = 0, timeout: Int64 = 10_000_000_000, bound: Int = 100) -> UInt64? {
        if case .queued(let id) = q.enqueue(department: department, weight: weight, lane: lane, cost: cost, now: now, timeout: timeout,
                                            bound: bound, item: name) { return id }
        return nil
    }

    func drain(_ q: inout Queue, _ n: Int, canDispatch: (Int) -> Bool = { _ in true }) -> [String] {
        (0..<n).compactMap { _ in q.dispatch(canDispatch: canDispatch)?.item }
    }

    func testOneLaneOneDepartmentIsFirstComeFirstServed() {
        var q = Queue()
        for i in 0..<5 { put(&q, "r\(i)") }
        XCTAssertEqual(drain(&q, 6), ["r0", "r1", "r2", "r3", "r4"])
        XCTAssertTrue(q.isEmpty)
    }

    func testStrictPriorityWhateverTheOrderOfArrival() {
        var q = Queue(minSharePerMille: 0)
        put(&q, "batch", lane: .batch)
        put(&q, "standard", lane: .standard)
        put(&q, "interactive", lane: .interactive)
        XCTAssertEqual(drain(&q, 3), ["interactive", "standard", "batch"])
    }

    func testTheStarvationGuardGivesAWaitingLowerLaneItsShareExactly() {
        var q = Queue(minSharePerMille: 100)  // 10%
        for i in 0..<100 { put(&q, "i\(i)", department: 0, lane: .interactive) }
        for i in 0..<100 { put(&q, "b\(i)", department: 1, lane: .batch) }
        let first = drain(&q, 50)
        // Every tenth freed slot goes to batch, while interactive still waits.
        XCTAssertEqual(first.enumerated().filter { $0.element.hasPrefix("b") }.map(\.offset), [9, 19, 29, 39, 49])
        XCTAssertEqual(first.filter { $0.hasPrefix("b") }, ["b0", "b1", "b2", "b3", "b4"], "first come first served inside batch")
    }

    func testTheGuardCountsOnlyWhileTheLowerLaneWaits() {
        var q = Queue(minSharePerMille: 500)
        for i in 0..<4 { put(&q, "i\(i)", department: 0, lane: .interactive) }
        XCTAssertEqual(drain(&q, 2), ["i0", "i1"], "no batch request waited: no credit was earned")
        put(&q, "b0", department: 1, lane: .batch)
        XCTAssertEqual(drain(&q, 3), ["i2", "b0", "i3"], "50%: the second slot after batch began waiting")
    }

    func testTheGuardServesTheMiddleLaneToo() {
        var q = Queue(minSharePerMille: 250)
        for i in 0..<8 { put(&q, "i\(i)", department: 0, lane: .interactive) }
        for i in 0..<8 { put(&q, "s\(i)", department: 1, lane: .standard) }
        for i in 0..<8 { put(&q, "b\(i)", department: 2, lane: .batch) }
        for i in 8..<16 { put(&q, "i\(i)", department: 0, lane: .interactive) }
        let order = drain(&q, 16)
        // 25% each over 16 slots, the second lower lane one slot behind (it lost the first tie).
        XCTAssertEqual(order.filter { $0.hasPrefix("s") }.count, 4, "\(order)")
        XCTAssertEqual(order.filter { $0.hasPrefix("b") }.count, 3, "\(order)")
    }

    func testAnIneligibleHigherLaneDoesNotBlockALowerOne() {
        // Interactive may only use GPU0's instances, which are full; a slot freed elsewhere
        // goes to batch rather than stay idle.
        var q = Queue(minSharePerMille: 0)
        put(&q, "cs", department: 0, lane: .interactive)
        put(&q, "batch", department: 1, lane: .batch)
        XCTAssertEqual(q.dispatch { $0 == 1 }?.item, "batch")
        XCTAssertNil(q.dispatch { $0 == 1 })
        XCTAssertEqual(q.dispatch(canDispatch: all)?.item, "cs")
    }

    func testEqualWeightsShareByCostNotByCount() {
        // Department 0 asks for 1,000 tokens a request, department 1 for 100: while both wait,
        // department 1 gets ten requests through for each of department 0's.
        var q = Queue()
        for i in 0..<10 { put(&q, "long\(i)", department: 0, cost: 1000) }
        for i in 0..<40 { put(&q, "short\(i)", department: 1, cost: 100) }
        let order = drain(&q, 22)
        XCTAssertEqual(order.filter { $0.hasPrefix("long") }.count, 2, "\(order)")
        XCTAssertEqual(order.filter { $0.hasPrefix("short") }.count, 20, "\(order)")
    }

    func testWeightsScaleTheShares() {
        var q = Queue()
        for i in 0..<30 { put(&q, "a\(i)", department: 0, weight: 4) }
        for i in 0..<30 { put(&q, "b\(i)", department: 1, weight: 1) }
        let order = drain(&q, 20)
        XCTAssertEqual(order.filter { $0.hasPrefix("a") }.count, 16, "\(order)")
    }

    func testAnIdleDepartmentCannotSaveUpCredit() {
        var q = Queue()
        for i in 0..<20 { put(&q, "a\(i)", department: 0) }
        _ = drain(&q, 10)  // department 1 was idle meanwhile
        for i in 0..<20 { put(&q, "b\(i)", department: 1) }
        let order = drain(&q, 10)
        XCTAssertEqual(order.filter { $0.hasPrefix("b") }.count, 5, "alternates, no burst of ten for b: \(order)")
    }

    func testDirectAdmissionsAreChargedToo() {
        var q = Queue()
        for _ in 0..<5 { q.charge(department: 0, weight: 1, lane: .standard, cost: 100) }
        put(&q, "a", department: 0)
        put(&q, "b", department: 1)
        XCTAssertEqual(drain(&q, 2), ["b", "a"], "department 0 used five slots without waiting")
    }

    func testSettlingToRealUsageMovesTheNextRequest() {
        var q = Queue()
        put(&q, "a0", department: 0, cost: 1000)
        put(&q, "b0", department: 1, cost: 1000)
        XCTAssertEqual(drain(&q, 2), ["a0", "b0"])
        // a0 used only 10 of its 1,000 estimated tokens; b0 all of them.
        q.settle(department: 0, lane: .standard, estimated: 1000, actual: 10)
        put(&q, "b1", department: 1, cost: 1000)
        put(&q, "a1", department: 0, cost: 1000)
        XCTAssertEqual(drain(&q, 2), ["a1", "b1"], "a arrived later but is owed the difference")
    }

    func testExpiredRequestsLeaveTheLineOldestFirst() {
        var q = Queue()
        put(&q, "early", department: 0, now: 0, timeout: 2 * second)
        put(&q, "late", department: 1, now: 1 * second, timeout: 2 * second)
        put(&q, "batch", department: 2, lane: .batch, now: 0, timeout: 30 * second)
        XCTAssertEqual(q.nextDeadline, 2 * second)
        XCTAssertEqual(q.expire(now: 2 * second - 1).map(\.item), [])
        XCTAssertEqual(q.expire(now: 2 * second).map(\.item), ["early"])
        XCTAssertEqual(q.nextDeadline, 3 * second)
        XCTAssertEqual(q.expire(now: 10 * second).map(\.item), ["late"])
        XCTAssertEqual(q.count, 1)
        XCTAssertEqual(drain(&q, 1), ["batch"])
        XCTAssertNil(q.nextDeadline)
    }

    func testTheBoundRefusesPastItPerLane() {
        var q = Queue()
        XCTAssertNotNil(put(&q, "1", bound: 2))
        XCTAssertNotNil(put(&q, "2", bound: 2))
        XCTAssertEqual(q.enqueue(department: 0, weight: 1, lane: .standard, cost: 1, now: 0, timeout: second, bound: 2, item: "3"), .full)
        XCTAssertNotNil(put(&q, "other lane", lane: .batch, bound: 2), "each lane has its own bound")
        XCTAssertEqual(q.enqueue(department: 0, weight: 1, lane: .standard, cost: 1, now: 0, timeout: second, bound: 0, item: "x"), .full)
    }

    func testCancelRemovesAtOnceAndOnlyOnce() {
        var q = Queue()
        let a = put(&q, "a")!
        put(&q, "b")
        let c = put(&q, "c", department: 1)!
        XCTAssertEqual(q.cancel(a)?.item, "a")
        XCTAssertNil(q.cancel(a), "already gone")
        XCTAssertEqual(q.count, 2)
        XCTAssertEqual(q.cancel(c)?.item, "c")
        XCTAssertEqual(drain(&q, 3), ["b"])
        XCTAssertNil(q.cancel(999))
    }

    func testCountsPerLaneAndDepartment() {
        var q = Queue()
        put(&q, "a", department: 0, lane: .interactive)
        put(&q, "b", department: 1, lane: .batch)
        put(&q, "c", department: 1, lane: .batch)
        XCTAssertEqual(q.count(lane: .batch), 2)
        XCTAssertEqual(q.count(lane: .batch, department: 1), 2)
        XCTAssertEqual(q.count(lane: .interactive, department: 1), 0)
    }

    func testALongLineStaysInOrderThroughCompaction() {
        var q = Queue()
        for i in 0..<500 { put(&q, "\(i)", bound: 1000) }
        XCTAssertEqual(drain(&q, 500), (0..<500).map(String.init))
    }

    // MARK: Lanes

    func testAHeaderMayLowerTheLaneNeverRaiseIt() {
        XCTAssertEqual(Lane.effective(declared: .interactive, header: "batch"), .batch)
        XCTAssertEqual(Lane.effective(declared: .batch, header: "interactive"), .batch)
        XCTAssertEqual(Lane.effective(declared: .standard, header: " Standard "), .standard)
        XCTAssertEqual(Lane.effective(declared: .standard, header: "urgent!!"), .standard, "unknown values are ignored")
        XCTAssertEqual(Lane.effective(declared: .interactive, header: nil), .interactive)
    }

    // MARK: Retry budget and slot shares

    func testTheRetryBudgetIsAFractionOfInFlightWithAMinimum() {
        let budget = RetryBudget(perMille: 200, minimum: 3)
        XCTAssertTrue(budget.allows(retrying: 2, inFlight: 0), "the minimum holds when idle")
        XCTAssertFalse(budget.allows(retrying: 3, inFlight: 10))
        XCTAssertTrue(budget.allows(retrying: 19, inFlight: 100))
        XCTAssertFalse(budget.allows(retrying: 20, inFlight: 100))
        XCTAssertFalse(RetryBudget(perMille: 0, minimum: 0).allows(retrying: 0, inFlight: 1000))
        XCTAssertTrue(RetryBudget(perMille: 1000, minimum: 0).allows(retrying: 0, inFlight: Int.max), "no overflow")
    }

    func testSlotsSplitExactlyOverTheLoops() {
        for limit in 1...20 {
            for loops in 1...4 {
                for instance in 0..<5 {
                    let shares = (0..<loops).map { SlotShare.of(limit: limit, loops: loops, loop: $0, instance: instance) }
                    XCTAssertEqual(shares.reduce(0, +), limit, "limit \(limit) over \(loops) loops")
                    XCTAssertLessThanOrEqual(shares.max()! - shares.min()!, 1)
                }
            }
        }
        XCTAssertEqual((0..<2).map { SlotShare.of(limit: 3, loops: 2, loop: $0, instance: 0) }, [2, 1])
        // Limits below the loop count spread over the loops by instance.
        XCTAssertEqual((0..<4).map { SlotShare.of(limit: 1, loops: 2, loop: 1, instance: $0) }, [0, 1, 0, 1])
    }

    func testFailoverStopsRetryingWhenTold() {
        var f = Failover(maxAttempts: 3)
        f.began(0)
        f.stopRetrying()
        let e = GatewayError.upstreamUnavailable("full")
        XCTAssertEqual(f.answered(status: 503, error: e), .deliver(blame: true), "the saturation answer goes to the client")
        XCTAssertEqual(f.failed(.connectFailed, error: e), .retry(blame: true))
        XCTAssertEqual(f.next(), .giveUp(e))
        XCTAssertTrue(Failover.isSaturation(429) && Failover.isSaturation(503) && !Failover.isSaturation(502))
    }
}
