import TollgateCore
import XCTest

/// The capacity panel's rules: the original set-up's (mean latency over 2.5 s, upstream
/// timeouts) and the waiting line's (sustained queueing, shed requests), else the room left.
final class CapacityAdviceTests: XCTestCase {
    func figures(forwarded: Int = 3600, latency: Double = 800, busy: Double = 700, timeouts: Int = 0, waited: Int = 0, wait: Double = 0,
                 shed: Int = 0, waitingNow: Int = 0, slots: Int? = 64) -> CapacityAdvice.Figures {
        CapacityAdvice.Figures(pool: "qwen", windowSeconds: 3600, forwarded: forwarded, meanLatencyMs: latency, meanBusyMs: busy,
                               upstreamTimeouts: timeouts, waited: waited, meanWaitMs: wait, shed: shed, waitingNow: waitingNow, slots: slots)
    }

    func testRoomByLittlesLaw() {
        let a = CapacityAdvice(figures())
        XCTAssertEqual(a.verdict, .hasRoom)
        // 64 slots × 0.8 / 0.7 s ≈ 73.1 requests/s; 1 request/s now.
        XCTAssertEqual(a.roomPerSecond, 72)
        XCTAssertEqual(a.summary, "pool qwen: has room for about 72 more requests/s")
        XCTAssertEqual(a.evidence.count, 2)
    }

    func testEachRuleSaysAddInstancesWithItsEvidence() {
        let slow = CapacityAdvice(figures(latency: 2600))
        XCTAssertEqual(slow.summary, "pool qwen: add instances")
        XCTAssertEqual(slow.evidence, ["mean latency 2.60 s is over 2.5 s"])
        XCTAssertEqual(CapacityAdvice(figures(timeouts: 40)).evidence, ["40 upstream timeouts"])
        XCTAssertEqual(CapacityAdvice(figures(timeouts: 2)).verdict, .hasRoom, "a stray timeout is no pile")
        XCTAssertEqual(CapacityAdvice(figures(waited: 1000, wait: 900, waitingNow: 12)).evidence,
                       ["sustained queueing: 1000 of 3600 requests waited, 0.90 s on average", "12 waiting now"])
        XCTAssertEqual(CapacityAdvice(figures(waited: 1000, wait: 100)).verdict, .hasRoom, "short waits are not sustained queueing")
        XCTAssertEqual(CapacityAdvice(figures(shed: 1)).evidence, ["1 requests shed (queue timeout or full)"])
    }

    func testUnknownWithoutLimitsOrTraffic() {
        XCTAssertEqual(CapacityAdvice(figures(slots: nil)).verdict, .unknown)
        XCTAssertEqual(CapacityAdvice(figures(slots: nil)).summary, "pool qwen: no max_in_flight set, its room is unknown")
        XCTAssertEqual(CapacityAdvice(figures(forwarded: 0)).summary, "pool qwen: no traffic to judge by")
    }
}
