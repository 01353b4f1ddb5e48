import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateDataPlane
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// README, configuration reference: `pools[].instances[].max_in_flight` — concurrent requests
/// to this instance (`0`, unlimited, by default), split exactly over the event loops; past it
/// requests wait in the gateway ("When the GPUs are full").
final class MaxInFlightTests: XCTestCase {
    /// Five requests at once against an instance that takes 800 ms per answer and allows two:
    /// two reach it, the three others wait in the gateway for a freed slot, and all five are
    /// answered; the instance never has more than two.
    func testAnInstanceNeverGetsMoreThanItsMaxInFlightRequests() async throws {
        var slow = SimulatorConfiguration()
        slow.timeToFirstToken = .milliseconds(800)
        let gw = try await GatewayFixture.start(instances: 1, simulator: slow) { config in
            config.eventLoops = 1  // one loop: its share of the limit is the whole limit
            config.health.probePath = ""  // only the test's requests reach the instance
            config.pools[0].instances[0].maxInFlight = 2
        }
        async let answers = withThrowingTaskGroup(of: Answer.self) { group in
            for i in 0..<5 {
                group.addTask {
                    let client = try await gw.client()
                    let answer = try await client.chat(key: TestKeys.engineering, content: "concurrent \(i)")
                    await client.close()
                    return answer
                }
            }
            var all: [Answer] = []
            for try await answer in group { all.append(answer) }
            return all
        }
        let waiting = await gw.eventually { await gw.dataPlane.metricsSnapshot().queues.values.reduce(0) { $0 + $1.waiting } == 3 }
        XCTAssertTrue(waiting, "three wait in the gateway")
        XCTAssertEqual(gw.instances[0].stats.requests, 2, "the instance saw at most max_in_flight requests")
        let all = try await answers
        XCTAssertEqual(all.map(\.status), [200, 200, 200, 200, 200], all.map(\.body).joined(separator: "\n"))
        XCTAssertEqual(gw.instances[0].stats.requests, 5)
        await gw.stop()
    }
}
