import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateDataPlane
import TollgateSimulator
import TollgateTestSupport
import XCTest

final class StreamingTests: XCTestCase {
    /// At 20 tokens per second, 10 tokens take half a second: the first chunks must reach the
    /// client long before the instance has finished.
    func testStreamArrivesInSeveralChunksBeforeTheUpstreamFinished() async throws {
        var sim = SimulatorConfiguration()
        sim.tokensPerSecond = 20
        let gw = try await GatewayFixture.start(instances: 1, simulator: sim)
        let client = try await gw.client()
        let answer = try await client.chat(key: TestKeys.engineering, extra: #","max_tokens":10"#, stream: true)
        XCTAssertEqual(answer.status, 200)
        XCTAssertEqual(answer.headers.first(name: "content-type"), "text/event-stream")
        XCTAssertGreaterThanOrEqual(answer.parts.count, 8, "chunks arrive one by one, not buffered")
        let first = answer.parts.first!.at
        XCTAssertGreaterThan((answer.endAt - first).nanoseconds, 350_000_000, "first chunk came ≥ 350 ms before the end")
        XCTAssertEqual(answer.events.last, "[DONE]")
        XCTAssertEqual(answer.events.count, 10 + 3, "role chunk, 10 tokens, finish chunk, [DONE]")
        await client.close()
        await gw.stop()
    }

    func testClientDisconnectCancelsTheUpstreamRequest() async throws {
        var sim = SimulatorConfiguration()
        sim.tokensPerSecond = 10
        let gw = try await GatewayFixture.start(instances: 1, simulator: sim)
        let client = try await gw.client()
        let body = #"{"model":"qwen2.5-0.5b-instruct","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#
        let partial = try await client.send(.POST, "/v1/chat/completions", body: body,
                                            headers: [("authorization", "Bearer \(TestKeys.engineering)")], abortAfterFirstPart: true)
        XCTAssertEqual(partial.status, 200)
        let instance = gw.instances[0]
        let cancelled = await gw.eventually(timeout: .seconds(3)) { instance.stats.inFlight == 0 }
        XCTAssertTrue(cancelled, "the instance stopped generating (100 tokens would take 10 s)")
        XCTAssertEqual(instance.stats.completionTokens, 0, "the stream never finished")
        let idle = await gw.eventually { gw.dataPlane.activeRequests == 0 }
        XCTAssertTrue(idle)
        await gw.stop()
    }

    /// A client that does not read: the gateway stops reading from the instance instead of
    /// buffering the answer. The instance here streams 256 MiB as fast as its socket takes it
    /// and counts what it could hand to the kernel.
    func testSlowClientSlowsTheUpstreamRead() async throws {
        let flood = try await FloodServer.start(totalBytes: 256 << 20)
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.health.probePath = ""
            config.pools[0].instances[0].url = UpstreamURL(host: "127.0.0.1", port: flood.port)
        }
        let raw = try await gw.raw()
        try await raw.channel.setOption(.autoRead, value: false).get()
        let body = #"{"model":"qwen2.5-0.5b-instruct","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
        try await raw.write("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(TestKeys.engineering)\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)")
        try await Task.sleep(for: .seconds(1))
        let written = flood.bytesWritten
        XCTAssertGreaterThan(written, 0, "the stream started")
        XCTAssertLessThan(written, 48 << 20, "the gateway stopped reading once the client stopped: \(written >> 20) MiB left the instance")
        // The client reads again: the stream resumes and completes.
        try await raw.channel.setOption(.autoRead, value: true).get()
        raw.channel.read()
        let done = await gw.eventually(timeout: .seconds(60)) { flood.bytesWritten == 256 << 20 }
        XCTAssertTrue(done, "resumed: \(flood.bytesWritten >> 20) MiB")
        try await raw.channel.close()
        await gw.stop()
        await flood.stop()
    }
}
