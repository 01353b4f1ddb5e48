import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateDataPlane
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// README, configuration reference: `pools[].instances[].max_in_flight` — concurrent requests
/// to this instance (`0`, unlimited, by default), split evenly over the event loops.
final class MaxInFlightTests: XCTestCase {
    /// Five requests at once against an instance that takes 800 ms per answer and allows two:
    /// two reach it, the others find no instance with a free slot (503 `no_instance_available`
    /// with `Retry-After`), and a freed slot is used again.
    func testAnInstanceNeverGetsMoreThanItsMaxInFlightRequests() async throws {
        var slow = SimulatorConfiguration()
        slow.timeToFirstToken = .milliseconds(800)
        let gw = try await GatewayFixture.start(instances: 1, simulator: slow) { config in
            config.eventLoops = 1  // one loop: its share of the limit is the whole limit
            config.health.probePath = ""  // only the test's requests reach the instance
            config.pools[0].instances[0].maxInFlight = 2
        }
        let answers = try await withThrowingTaskGroup(of: Answer.self) { group in
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
        XCTAssertEqual(answers.map(\.status).sorted(), [200, 200, 503, 503, 503], answers.map(\.body).joined(separator: "\n"))
        for refused in answers where refused.status == 503 {
            XCTAssertEqual(refused.errorCode, "no_instance_available", refused.body)
            XCTAssertNotNil(refused.headers.first(name: "retry-after"))
        }
        XCTAssertEqual(gw.instances[0].stats.requests, 2, "the instance saw at most max_in_flight requests")

        // The slots are given back when the answers end.
        let client = try await gw.client()
        let again = try await client.chat(key: TestKeys.engineering, content: "after")
        XCTAssertEqual(again.status, 200, again.body)
        await client.close()
        await gw.stop()
    }
}
