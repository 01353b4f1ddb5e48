import Atomics
import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateDataPlane
import TollgateTestSupport
import XCTest

/// README, "Balancing, health and failover", retries: a kept-alive connection the instance had
/// closed while idle is retried once on a fresh connection without counting against the
/// instance; after the first byte a failure can only close the client connection.
final class RetryRuleTests: XCTestCase {
    static let completion = #"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#

    static func scripted(_ name: String, _ upstream: ScriptedUpstream, weight: Int = 1) -> InstanceConfiguration {
        InstanceConfiguration(name: name, url: UpstreamURL(host: "127.0.0.1", port: upstream.port), labels: ["gpu": "0"], weight: weight)
    }

    /// The instance answers the first request of each connection and keeps it open, then
    /// closes it when the next request arrives — what a pooled connection looks like when the
    /// instance's keep-alive timeout closed it while idle. With no retry configured
    /// (`attempts: 1`) and an instance ejected at its first failure (`max_fails: 1`), every
    /// request is still answered: the stale connection is not a failed try.
    func testAConnectionTheInstanceClosedWhileIdleIsRetriedWithoutCountingAgainstIt() async throws {
        let upstream = try ScriptedUpstream { request in
            request.onConnection == 0 ? .json(RetryRuleTests.completion) : ScriptedUpstream.Reply("", close: true)
        }
        defer { upstream.stop() }
        let gw = try await GatewayFixture.start(instances: 0) { config in
            config.eventLoops = 1  // one loop, one pool: the second request takes the pooled connection
            config.health.probePath = ""
            config.health.maxFails = 1
            config.retry.attempts = 1
            config.pools[0].instances = [Self.scripted("scripted", upstream)]
        }
        let client = try await gw.client()
        for i in 0..<4 {
            let answer = try await client.chat(key: TestKeys.engineering, content: "keep-alive \(i)")
            XCTAssertEqual(answer.status, 200, "request \(i): \(answer.body)")
        }
        await client.close()
        // Requests 2–4 each found their pooled connection closed and went out again on a new one.
        XCTAssertEqual(upstream.connections, 4)
        XCTAssertEqual(upstream.requests.count, 7)
        let failures = gw.dataPlane.counters.reduce(0) { $0 + $1.upstreamFailures.load(ordering: .relaxed) }
        let retries = gw.dataPlane.counters.reduce(0) { $0 + $1.retries.load(ordering: .relaxed) }
        XCTAssertEqual(failures, 0, "not counted as a failed try")
        XCTAssertEqual(retries, 0, "nor as a retry")
        XCTAssertEqual(gw.dataPlane.state.availability[0], .up, "not ejected (max_fails: 1)")
        await gw.stop()
    }

    /// The instance sends its head and the start of a body, then dies. The client has the start
    /// of the answer: the gateway cannot answer otherwise, so it closes the client's connection,
    /// and does not try the other instance.
    func testAFailureAfterTheFirstByteClosesTheClientConnectionWithoutARetry() async throws {
        let cut = try ScriptedUpstream { _ in
            ScriptedUpstream.Reply("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"id\":\"partial", close: true)
        }
        defer { cut.stop() }
        let spare = try ScriptedUpstream { _ in .json(RetryRuleTests.completion) }
        defer { spare.stop() }
        let gw = try await GatewayFixture.start(instances: 0) { config in
            config.eventLoops = 1
            config.health.probePath = ""
            config.health.maxFails = 0
            // Smooth weighted round-robin picks the heavier instance first.
            config.pools[0].instances = [Self.scripted("cut", cut, weight: 1000), Self.scripted("spare", spare)]
        }
        let socket = try RawSocket(port: gw.port)
        let body = #"{"model":"qwen2.5-0.5b-instruct","messages":[{"role":"user","content":"cut"}]}"#
        try socket.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(TestKeys.engineering)\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)")
        XCTAssertThrowsError(try socket.readResponse(method: "POST", timeout: .seconds(5))) { error in
            // The head and 14 of 1,000 bytes, then the close (not a timeout, not a whole answer).
            XCTAssertTrue("\(error)".contains("closed after 14 of 1000 body bytes"), "\(error)")
        }
        XCTAssertTrue(socket.closedByPeer)
        XCTAssertEqual(cut.requests.count, 1)
        XCTAssertEqual(spare.requests.count, 0, "no retry once the answer has started")
        await gw.stop()
    }
}
