import Foundation
import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateDataPlane
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// README: 504 `upstream_timeout` — "no answer within `per_try` on any try, or `request` in
/// all"; `timeouts.per_try` (request sent → response head, per try) and `timeouts.request`
/// (the whole request including a streamed answer).
///
/// A timer never fires early, so each lower bound is exact. The upper bounds allow one second
/// beyond the claim: the suite shares a loaded 2-core machine with other builds and tests, where
/// a scheduling delay of a few hundred milliseconds happens; a timeout that did not apply (the
/// next one is 5 s or more away) still fails them.
final class TimeoutTests: XCTestCase {
    static let slack: Duration = .seconds(1)

    private func hungInstances(_ gw: GatewayFixture) {
        var hung = SimulatorConfiguration()
        hung.hang = true
        for sim in gw.instances { sim.update(hung) }
    }

    /// Two instances that never answer, `per_try` 300 ms: each is tried for 300 ms, then 504.
    func testNoAnswerWithinPerTryOnAnyTryIs504() async throws {
        let gw = try await GatewayFixture.start(instances: 2, gpus: 2) { config in
            config.health.probePath = ""
            config.timeouts.perTry = .milliseconds(300)
            config.timeouts.request = .seconds(30)
        }
        hungInstances(gw)
        let client = try await gw.client()
        let start = ContinuousClock.now
        let answer = try await client.chat(key: TestKeys.engineering)
        let elapsed = ContinuousClock.now - start
        XCTAssertEqual(answer.status, 504, answer.body)
        XCTAssertEqual(answer.errorCode, "upstream_timeout", answer.body)
        XCTAssertEqual(gw.instances.map(\.stats.requests), [1, 1], "one try on each instance")
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(600), "each try waited its per_try")
        XCTAssertLessThan(elapsed, .milliseconds(600) + Self.slack)
        await client.close()
        await gw.stop()
    }

    /// `request` bounds the whole request, whatever `per_try` allows.
    func testTheRequestTimeoutEndsAWaitThatPerTryWouldAllow() async throws {
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.health.probePath = ""
            config.timeouts.perTry = .seconds(20)
            config.timeouts.request = .milliseconds(400)
        }
        hungInstances(gw)
        let client = try await gw.client()
        let start = ContinuousClock.now
        let answer = try await client.chat(key: TestKeys.engineering)
        let elapsed = ContinuousClock.now - start
        XCTAssertEqual(answer.status, 504, answer.body)
        XCTAssertEqual(answer.errorCode, "upstream_timeout", answer.body)
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(400))
        XCTAssertLessThan(elapsed, .milliseconds(400) + Self.slack)
        await client.close()
        await gw.stop()
    }

    /// A stream still running when `request` is up is cut: its client already has a 200, so the
    /// connection is closed in the middle of the chunked body.
    func testAStreamStillRunningAtTheRequestTimeoutIsCut() async throws {
        var slow = SimulatorConfiguration()
        slow.tokensPerSecond = 10  // 100 tokens: ten seconds
        let gw = try await GatewayFixture.start(instances: 1, simulator: slow) { config in
            config.health.probePath = ""
            config.timeouts.request = .milliseconds(700)
        }
        let socket = try RawSocket(port: gw.port)
        let body = #"{"model":"qwen2.5-0.5b-instruct","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"long"}]}"#
        let start = ContinuousClock.now
        try socket.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(TestKeys.engineering)\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)")
        XCTAssertThrowsError(try socket.readResponse(method: "POST", timeout: .seconds(5))) { error in
            XCTAssertTrue("\(error)".contains("closed inside a chunk"), "cut, not finished nor timed out: \(error)")
        }
        let elapsed = ContinuousClock.now - start
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(700))
        XCTAssertLessThan(elapsed, .milliseconds(700) + Self.slack)
        await gw.stop()
    }
}
