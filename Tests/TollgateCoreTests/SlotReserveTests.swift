import TollgateCore
import XCTest

/// The slots a pool keeps back from lower lanes for the higher lanes' recent traffic
/// (`SlotReserve`), with an injected clock, and why it exists: a flood of equal generations that
/// finish in waves makes an interactive client wait a whole generation for its next slot.
final class SlotReserveTests: XCTestCase {
    let ms: Int64 = 1_000_000
    let second: Int64 = 1_000_000_000

    func counts(interactive: Int = 0, standard: Int = 0, batch: Int = 0) -> LaneCounts {
        var c = LaneCounts()
        c[.interactive] = interactive
        c[.standard] = standard
        c[.batch] = batch
        return c
    }

    func testALowerLaneLeavesTheHigherLanesUnusedRecentPeak() {
        var r = SlotReserve(window: second)
        // Interactive had five in flight at once; one of them just ended.
        r.observe(counts(interactive: 5, batch: 35), now: 10 * ms)
        let now = counts(interactive: 4, batch: 35)
        XCTAssertEqual(r.held(for: .batch, inFlight: now, now: 20 * ms), 1)
        XCTAssertFalse(r.mayTake(lane: .batch, free: 1, total: 40, inFlight: now, minSharePerMille: 100, now: 20 * ms),
                       "the slot interactive's next request will want")
        XCTAssertTrue(r.mayTake(lane: .batch, free: 2, total: 40, inFlight: now, minSharePerMille: 100, now: 20 * ms))
        XCTAssertTrue(r.mayTake(lane: .interactive, free: 1, total: 40, inFlight: now, minSharePerMille: 100, now: 20 * ms))
        XCTAssertEqual(r.held(for: .interactive, inFlight: now, now: 20 * ms), 0, "nothing is held from the top lane")
    }

    func testNothingIsHeldWhileTheHigherLaneUsesItsPeak() {
        var r = SlotReserve(window: second)
        r.observe(counts(interactive: 5), now: 0)
        XCTAssertEqual(r.held(for: .batch, inFlight: counts(interactive: 5, batch: 30), now: ms), 0)
        XCTAssertEqual(r.held(for: .batch, inFlight: counts(interactive: 9, batch: 30), now: ms), 0, "above its peak")
    }

    func testTheReserveLapsesAfterOneToTwoWindowsWithoutTraffic() {
        var r = SlotReserve(window: second)
        r.observe(counts(interactive: 3), now: 100 * ms)
        let idle = counts(batch: 10)
        XCTAssertEqual(r.held(for: .batch, inFlight: idle, now: 900 * ms), 3)
        XCTAssertEqual(r.held(for: .batch, inFlight: idle, now: 1_900 * ms), 3, "the previous window still counts")
        XCTAssertEqual(r.lapsesAt, 2 * second)
        XCTAssertEqual(r.held(for: .batch, inFlight: idle, now: 2_000 * ms), 0)
        XCTAssertNil(r.lapsesAt)
        // A long gap at once: what was in flight all along is the previous window's peak.
        r.observe(counts(interactive: 2), now: 2_100 * ms)
        XCTAssertEqual(r.held(for: .batch, inFlight: counts(interactive: 1), now: 9_000 * ms), 0,
                       "seven seconds later only the one still in flight is remembered, and it is in use")
    }

    func testEachLaneLeavesRoomForEveryLaneAboveIt() {
        var r = SlotReserve(window: second)
        r.observe(counts(interactive: 4, standard: 6), now: 0)
        let now = counts(interactive: 2, standard: 3, batch: 20)
        XCTAssertEqual(r.held(for: .standard, inFlight: now, now: ms), 2)
        XCTAssertEqual(r.held(for: .batch, inFlight: now, now: ms), 5)
    }

    func testTheGuardsShareIsNeverReserved() {
        var r = SlotReserve(window: second)
        r.observe(counts(interactive: 40), now: 0)
        // Interactive used all 40 slots; 4 are free now. Batch holds 3 (< 10% of 40): it may take one.
        XCTAssertTrue(r.mayTake(lane: .batch, free: 4, total: 40, inFlight: counts(interactive: 33, batch: 3), minSharePerMille: 100, now: ms))
        XCTAssertFalse(r.mayTake(lane: .batch, free: 4, total: 40, inFlight: counts(interactive: 32, batch: 4), minSharePerMille: 100, now: ms))
        XCTAssertFalse(r.mayTake(lane: .batch, free: 4, total: 40, inFlight: counts(interactive: 33, batch: 3), minSharePerMille: 0, now: ms))
    }

    func testOffOrUnlimitedOrFullIsPlainPriority() {
        var off = SlotReserve(window: 0)
        off.observe(counts(interactive: 5), now: 0)
        XCTAssertTrue(off.mayTake(lane: .batch, free: 1, total: 40, inFlight: counts(batch: 39), minSharePerMille: 0, now: ms))
        XCTAssertNil(off.lapsesAt)
        var r = SlotReserve(window: second)
        r.observe(counts(interactive: 5), now: 0)
        XCTAssertTrue(r.mayTake(lane: .batch, free: .max, total: .max, inFlight: counts(batch: 39), minSharePerMille: 0, now: ms),
                      "instances without a limit: nothing to keep back")
        XCTAssertFalse(r.mayTake(lane: .interactive, free: 0, total: 40, inFlight: counts(interactive: 40), minSharePerMille: 0, now: ms))
    }

    // MARK: The reason, simulated

    /// One loop's pool of 10 slots, generations of exactly 100 ms, a batch department that always
    /// has requests waiting, three interactive clients that send their next request 1 ms after
    /// each answer. Slots are handed out as the data plane does: a freed slot goes to the line
    /// (`AdmissionQueue`, strict priority), an arriving request takes a free slot if its lane may.
    /// Returns the interactive requests' waits after the first second, in ms.
    func simulate(window: Int64) -> [Int64] {
        let service: Int64 = 100 * ms, think: Int64 = ms, total = 10, end = 10 * second
        var queue = AdmissionQueue<Lane>(minSharePerMille: 100)
        var reserve = SlotReserve(window: window)
        var inFlight = LaneCounts()
        // (time, kind): 0 = a generation ends (lane), 1 = an interactive request arrives.
        var events: [(at: Int64, finishes: Lane?, arrival: Int64)] = []
        var waits: [Int64] = []
        func start(_ lane: Lane, at now: Int64, arrived: Int64) {
            inFlight[lane] += 1
            reserve.observe(inFlight, now: now)
            events.append((now + service, lane, arrived))
            if lane == .interactive && arrived >= second { waits.append((now - arrived) / ms) }
        }
        func mayTake(_ lane: Lane, now: Int64) -> Bool {
            let free = total - (inFlight[.interactive] + inFlight[.standard] + inFlight[.batch])
            return reserve.mayTake(lane: lane, free: free, total: total, inFlight: inFlight, minSharePerMille: 100, now: now)
        }
        func refillBatch(now: Int64) {
            while queue.count(lane: .batch) < 50 {
                _ = queue.enqueue(department: 1, weight: 1, lane: .batch, cost: 1, now: now, timeout: .max, bound: .max, item: .batch)
            }
        }
        refillBatch(now: 0)
        while let e = queue.dispatch(canDispatch: { _, lane in mayTake(lane, now: 0) }) { start(e.item, at: 0, arrived: e.enqueuedAt) }
        for c in 0..<3 { events.append((5 * ms + Int64(c), nil, 0)) }
        while let i = events.indices.min(by: { events[$0].at < events[$1].at }), events[i].at < end {
            let e = events.remove(at: i)
            let now = e.at
            if let lane = e.finishes {
                inFlight[lane] -= 1
                if lane == .interactive { events.append((now + think, nil, 0)) }
                refillBatch(now: now)
                while let next = queue.dispatch(canDispatch: { _, lane in mayTake(lane, now: now) }) {
                    start(next.item, at: now, arrived: next.enqueuedAt)
                }
            } else if mayTake(.interactive, now: now) {
                start(.interactive, at: now, arrived: now)
            } else {
                _ = queue.enqueue(department: 0, weight: 1, lane: .interactive, cost: 1, now: now, timeout: .max, bound: .max,
                                  item: .interactive)
            }
        }
        return waits
    }

    func testKeepingTheInteractiveSlotsRemovesTheWaitForTheNextWave() {
        let strict = simulate(window: 0)
        let reserved = simulate(window: second)
        XCTAssertGreaterThan(strict.count, 100)
        XCTAssertGreaterThan(reserved.count, strict.count, "no wait: more interactive requests in the same time")
        // Strict priority alone: each next request waits for the next wave (~99 ms).
        XCTAssertGreaterThanOrEqual(strict.sorted()[strict.count / 2], 90)
        XCTAssertEqual(reserved.max(), 0, "every next interactive request finds the slot its last one left")
    }
}
