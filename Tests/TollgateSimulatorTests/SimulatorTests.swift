import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateSimulator
import TollgateTestSupport
import XCTest

final class SimulatorTests: XCTestCase {
    private var group: MultiThreadedEventLoopGroup!
    private var started: [SimulatedInstance] = []

    override func setUp() async throws {
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    }

    override func tearDown() async throws {
        for instance in self.started { try await instance.stop() }
        self.started = []
        try await self.group.shutdownGracefully()
    }

    private func start(gpu: String = "0", _ configure: (inout SimulatorConfiguration) -> Void = { _ in }) async throws -> SimulatedInstance {
        var configuration = SimulatorConfiguration()
        configure(&configuration)
        let instance = try await SimulatedInstance.start(name: "qwen-test", port: 0, gpu: gpu, configuration: configuration, group: self.group)
        self.started.append(instance)
        return instance
    }

    private func get(_ instance: SimulatedInstance, _ path: String) async throws -> Answer {
        try await HTTPTestClient.send(port: instance.port, group: self.group, .GET, path)
    }

    private func post(_ instance: SimulatedInstance, _ path: String, _ json: String, closeAfterFirstPart: Bool = false) async throws -> Answer {
        try await HTTPTestClient.send(port: instance.port, group: self.group, .POST, path, body: json, abortAfterFirstPart: closeAfterFirstPart)
    }

    private func object(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], text)
    }

    /// Two messages of 3 words each: (3 + 3) + (3 + 3) = 12 prompt tokens.
    private static let twoMessages = #"[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello there, world"}]"#

    private func chatBody(maxTokens: Int? = 5, stream: Bool = false, includeUsage: Bool = false) -> String {
        var body = #"{"model":"qwen2.5-0.5b-instruct","messages":"# + Self.twoMessages
        if let maxTokens { body += #","max_tokens":"# + String(maxTokens) }
        if stream { body += #","stream":true"# }
        if includeUsage { body += #","stream_options":{"include_usage":true}"# }
        return body + "}"
    }

    /// Polls the instance's stats until `condition` holds (the server updates them just before writing).
    private func waitForStats(_ instance: SimulatedInstance, _ condition: (SimulatorStats) -> Bool) async throws -> SimulatorStats {
        for _ in 0..<100 {
            if condition(instance.stats) { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        return instance.stats
    }

    // MARK: The benchmark's reference forwarder

    /// `tollgate reference-proxy` forwards answers whole — JSON and streams — over its pooled
    /// upstream connections, so the benchmark's reference line measures real forwarding.
    func testReferenceProxyForwardsAnswersAndStreams() async throws {
        let instance = try await start { $0.timeToFirstToken = .zero; $0.tokensPerSecond = 0 }
        let proxy = try await ReferenceProxy.start(host: "127.0.0.1", port: 0, upstreamHost: "127.0.0.1", upstreamPort: instance.port, group: group)
        let port = try XCTUnwrap(proxy.localAddress?.port)
        for _ in 0..<3 {
            let answer = try await HTTPTestClient.send(port: port, group: group, .POST, "/v1/chat/completions", body: chatBody())
            XCTAssertEqual(answer.status, 200)
            let usage = try XCTUnwrap(try object(answer.body)["usage"] as? [String: Any])
            XCTAssertEqual(usage["completion_tokens"] as? Int, 5)
        }
        let stream = try await HTTPTestClient.send(port: port, group: group, .POST, "/v1/chat/completions", body: chatBody(stream: true))
        XCTAssertEqual(stream.status, 200)
        XCTAssertTrue(stream.body.hasSuffix("data: [DONE]\n\n"), stream.body)
        XCTAssertEqual(instance.stats.generations, 4)
        XCTAssertEqual(instance.stats.streams, 1)
        try await proxy.close()
    }

    /// The raw-bytes reference: pipelined keep-alive requests forwarded as bytes (with
    /// `X-Forwarded-For` added), answers passed through in order; an ambiguous head is refused.
    func testRawReferenceProxyForwardsPipelinedRequestsAndRefusesAmbiguousHeads() async throws {
        let instance = try await start { $0.timeToFirstToken = .zero; $0.tokensPerSecond = 0 }
        let proxy = try await RawReferenceProxy.start(host: "127.0.0.1", port: 0, upstreamHost: "127.0.0.1", upstreamPort: instance.port,
                                                      group: group)
        let port = try XCTUnwrap(proxy.localAddress?.port)
        let client = try await HTTPTestClient.connect(port: port, group: group)
        let chat = TestRequest(.POST, "/v1/chat/completions", body: chatBody())
        let answers = try await client.sendPipelined([chat, TestRequest(.GET, "/healthz"), chat, TestRequest(.POST, "/v1/chat/completions",
                                                                                                           body: chatBody(stream: true))])
        XCTAssertEqual(answers.map(\.status), [200, 200, 200, 200])
        XCTAssertEqual(try XCTUnwrap(try object(answers[0].body)["usage"] as? [String: Any])["completion_tokens"] as? Int, 5)
        XCTAssertTrue(answers[1].body.contains("\"status\":\"ok\""), answers[1].body)
        XCTAssertTrue(answers[3].body.hasSuffix("data: [DONE]\n\n"), answers[3].body)
        XCTAssertEqual(instance.stats.generations, 3)
        await client.close()
        let raw = try await RawTestClient.connect(port: port, group: group)
        try await raw.write("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}")
        let refused = try await raw.readUntilClosed()
        XCTAssertTrue(refused.hasPrefix("HTTP/1.1 400"), refused)
        XCTAssertEqual(instance.stats.generations, 3)
        try await proxy.close()
    }

    // MARK: Endpoints

    func testHealthzAndModels() async throws {
        let instance = try await self.start(gpu: "1")
        let health = try await self.get(instance, "/healthz")
        XCTAssertEqual(health.status, 200)
        XCTAssertEqual(health.headers.first(name: "content-type"), "application/json")
        XCTAssertEqual(health.body, #"{"status":"ok","model":"qwen2.5-0.5b-instruct","gpu":"1"}"#)

        let models = try self.object(try await self.get(instance, "/v1/models").body)
        XCTAssertEqual(models["object"] as? String, "list")
        let data = try XCTUnwrap(models["data"] as? [[String: Any]])
        XCTAssertEqual(data.first?["id"] as? String, "qwen2.5-0.5b-instruct")
        XCTAssertEqual(data.first?["owned_by"] as? String, "tollgate-sim")
    }

    func testNonStreamChatUsageArithmetic() async throws {
        let instance = try await self.start()
        let response = try await self.post(instance, "/v1/chat/completions", self.chatBody(maxTokens: 5))
        XCTAssertEqual(response.status, 200)
        XCTAssertEqual(response.headers.first(name: "content-length"), String(response.body.utf8.count))
        let answer = try self.object(response.body)
        XCTAssertEqual(answer["object"] as? String, "chat.completion")
        XCTAssertTrue((answer["id"] as? String)?.hasPrefix("chatcmpl-") ?? false)
        let usage = try XCTUnwrap(answer["usage"] as? [String: Int])
        XCTAssertEqual(usage, ["prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17])
        let choice = try XCTUnwrap((answer["choices"] as? [[String: Any]])?.first)
        XCTAssertEqual(choice["finish_reason"] as? String, "length")
        let content = try XCTUnwrap((choice["message"] as? [String: Any])?["content"] as? String)
        XCTAssertEqual(content.split(separator: " ").count, 5)

        // Deterministic: the same prompt gives the same text.
        let again = try self.object(try await self.post(instance, "/v1/chat/completions", self.chatBody(maxTokens: 5)).body)
        let againContent = ((again["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String
        XCTAssertEqual(againContent, content)

        // Without max_tokens: defaultCompletionTokens, finish_reason "stop"; array content parts count too.
        let parts = #"{"messages":[{"role":"user","content":[{"type":"text","text":"one two"},{"type":"text","text":"three"}]}]}"#
        let defaulted = try self.object(try await self.post(instance, "/v1/chat/completions", parts).body)
        XCTAssertEqual(defaulted["usage"] as? [String: Int], ["prompt_tokens": 6, "completion_tokens": 16, "total_tokens": 22])
        XCTAssertEqual((defaulted["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String, "stop")
    }

    func testStreamEventsWithAndWithoutUsage() async throws {
        let instance = try await self.start()
        let plain = try await self.post(instance, "/v1/chat/completions", self.chatBody(maxTokens: 5, stream: true))
        XCTAssertEqual(plain.status, 200)
        XCTAssertEqual(plain.headers.first(name: "content-type"), "text/event-stream")
        XCTAssertEqual(plain.headers.first(name: "transfer-encoding"), "chunked")
        XCTAssertEqual(plain.headers.first(name: "cache-control"), "no-cache")
        var events = plain.events
        XCTAssertEqual(events.count, 1 + 5 + 1 + 1)  // role, tokens, finish, [DONE]
        XCTAssertEqual(events.last, "[DONE]")
        XCTAssertFalse(plain.body.contains("usage"))
        let first = try self.object(events[0])
        XCTAssertEqual(first["object"] as? String, "chat.completion.chunk")
        let firstDelta = (first["choices"] as? [[String: Any]])?.first?["delta"] as? [String: String]
        XCTAssertEqual(firstDelta, ["role": "assistant", "content": ""])
        let finish = try self.object(events[6])
        XCTAssertEqual((finish["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String, "length")

        // The streamed text is the non-streamed text.
        var streamed = ""
        for event in events[1...5] {
            let chunk = try self.object(event)
            streamed += ((chunk["choices"] as? [[String: Any]])?.first?["delta"] as? [String: String])?["content"] ?? ""
        }
        let whole = try self.object(try await self.post(instance, "/v1/chat/completions", self.chatBody(maxTokens: 5)).body)
        XCTAssertEqual(((whole["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String, streamed)

        let withUsage = try await self.post(instance, "/v1/chat/completions", self.chatBody(maxTokens: 5, stream: true, includeUsage: true))
        events = withUsage.events
        XCTAssertEqual(events.count, 1 + 5 + 1 + 1 + 1)  // role, tokens, finish, usage, [DONE]
        XCTAssertEqual(events.last, "[DONE]")
        for event in events.dropLast(2) {
            XCTAssertTrue(try self.object(event)["usage"] is NSNull, event)
        }
        let usageChunk = try self.object(events[events.count - 2])
        XCTAssertEqual((usageChunk["choices"] as? [Any])?.count, 0)
        XCTAssertEqual(usageChunk["usage"] as? [String: Int], ["prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17])
    }

    func testLegacyCompletionsAndEmbeddings() async throws {
        let instance = try await self.start()
        let completion = try self.object(
            try await self.post(instance, "/v1/completions", #"{"model":"x","prompt":"Once upon a time","max_tokens":3}"#).body
        )
        XCTAssertEqual(completion["object"] as? String, "text_completion")
        XCTAssertEqual(completion["model"] as? String, "qwen2.5-0.5b-instruct")  // unknown model: answered anyway
        XCTAssertEqual(completion["usage"] as? [String: Int], ["prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7])
        XCTAssertEqual(((completion["choices"] as? [[String: Any]])?.first?["text"] as? String)?.split(separator: " ").count, 3)

        let stream = try await self.post(instance, "/v1/completions", #"{"prompt":["a b","c"],"max_tokens":2,"stream":true}"#)
        XCTAssertEqual(stream.events.count, 2 + 1 + 1)  // tokens, finish, [DONE]: no role event
        XCTAssertEqual(try self.object(stream.events[0])["object"] as? String, "text_completion")

        let embeddings = try self.object(
            try await self.post(instance, "/v1/embeddings", #"{"model":"x","input":["hello world","hi"]}"#).body
        )
        let data = try XCTUnwrap(embeddings["data"] as? [[String: Any]])
        XCTAssertEqual(data.count, 2)
        XCTAssertEqual((data[1]["embedding"] as? [Double])?.count, 8)
        XCTAssertEqual(data[1]["index"] as? Int, 1)
        XCTAssertEqual(embeddings["usage"] as? [String: Int], ["prompt_tokens": 3, "total_tokens": 3])
    }

    func testClientErrors() async throws {
        let instance = try await self.start()
        let invalid = try await self.post(instance, "/v1/chat/completions", "{not json")
        XCTAssertEqual(invalid.status, 400)
        XCTAssertEqual((try self.object(invalid.body)["error"] as? [String: Any])?["type"] as? String, "invalid_request_error")
        let noMessages = try await self.post(instance, "/v1/chat/completions", #"{"model":"m"}"#)
        XCTAssertEqual(noMessages.status, 400)
        let unknown = try await self.get(instance, "/v1/nothing")
        XCTAssertEqual(unknown.status, 404)
        XCTAssertNotNil(try self.object(unknown.body)["error"])
        let wrongMethod = try await self.get(instance, "/v1/chat/completions")
        XCTAssertEqual(wrongMethod.status, 405)
    }

    func testKeepAlivePipelinedRequestsOnOneConnection() async throws {
        let instance = try await self.start { $0.tokensPerSecond = 1000 }
        let chat = TestRequest(.POST, "/v1/chat/completions", body: self.chatBody(maxTokens: 3, stream: true))
        let client = try await HTTPTestClient.connect(port: instance.port, group: self.group)
        let responses = try await client.sendPipelined([TestRequest(.GET, "/healthz"), chat, TestRequest(.GET, "/v1/models"), chat])
        await client.close()
        XCTAssertEqual(responses.map(\.status), [200, 200, 200, 200])
        XCTAssertEqual(responses[1].events.last, "[DONE]")
        XCTAssertEqual(responses[3].events.count, 1 + 3 + 1 + 1)
        XCTAssertEqual(instance.stats.requests, 4)
    }

    func testOversizedBodyIs413() async throws {
        let instance = try await self.start()
        let response = try await HTTPTestClient.send(port: instance.port, group: self.group, .POST, "/v1/chat/completions", body: "{}",
                                                     headers: [("content-length", String(17 * 1024 * 1024))])
        XCTAssertEqual(response.status, 413)
        XCTAssertEqual(response.headers.first(name: "connection"), "close")
    }

    // MARK: Timing and capacity

    func testTokensPerSecondSpacesTheStream() async throws {
        let instance = try await self.start { $0.tokensPerSecond = 100 }
        let clock = ContinuousClock()
        let begun = clock.now
        let response = try await self.post(instance, "/v1/chat/completions", self.chatBody(maxTokens: 10, stream: true))
        let elapsed = clock.now - begun
        XCTAssertEqual(response.events.count, 1 + 10 + 1 + 1)
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(90))  // tokens 2…10 each 10 ms after the previous one
        let firstPart = try XCTUnwrap(response.parts.first).at
        XCTAssertLessThan(firstPart, response.endAt - .milliseconds(60), "the first chunk comes well before the end")
        XCTAssertGreaterThan(response.parts.count, 5, "tokens arrive one by one")
    }

    func testTimeToFirstTokenDelaysNonStreamedAnswer() async throws {
        let instance = try await self.start {
            $0.timeToFirstToken = .milliseconds(50)
            $0.tokensPerSecond = 200
        }
        let clock = ContinuousClock()
        let begun = clock.now
        let response = try await self.post(instance, "/v1/chat/completions", self.chatBody(maxTokens: 10))
        XCTAssertEqual(response.status, 200)
        XCTAssertGreaterThanOrEqual(clock.now - begun, .milliseconds(100))  // 50 ms + 10 tokens / 200 tok/s
    }

    func testCapacityOneSerialisesRequests() async throws {
        let instance = try await self.start {
            $0.capacity = 1
            $0.tokensPerSecond = 100
        }
        let body = self.chatBody(maxTokens: 10)  // 100 ms each
        let clock = ContinuousClock()
        let begun = clock.now
        let group: any EventLoopGroup = self.group
        let port = instance.port
        async let first = HTTPTestClient.send(port: port, group: group, .POST, "/v1/chat/completions", body: body)
        async let second = HTTPTestClient.send(port: port, group: group, .POST, "/v1/chat/completions", body: body)
        let queued = try await self.waitForStats(instance) { _ in instance.queuedGenerations == 1 }
        XCTAssertEqual(queued.inFlight, 2)
        XCTAssertEqual(instance.activeGenerations, 1)
        let (a, b) = try await (first, second)
        XCTAssertEqual(a.status, 200)
        XCTAssertEqual(b.status, 200)
        XCTAssertGreaterThanOrEqual(clock.now - begun, .milliseconds(190))
        XCTAssertEqual(instance.stats.inFlight, 0)
        XCTAssertEqual(instance.activeGenerations, 0)
    }

    /// `/metrics` speaks vLLM's metric names: requests waiting for a slot, generations running,
    /// and the share of slots in use as the KV cache's usage.
    func testMetricsUseVLLMsNames() async throws {
        let instance = try await self.start {
            $0.capacity = 1
            $0.tokensPerSecond = 20
        }
        let idle = try await self.get(instance, "/metrics")
        XCTAssertEqual(idle.status, 200)
        XCTAssertTrue(idle.body.contains("vllm:num_requests_waiting{model_name=\"qwen2.5-0.5b-instruct\"} 0.0\n"), idle.body)
        XCTAssertTrue(idle.body.contains("vllm:num_requests_running{model_name=\"qwen2.5-0.5b-instruct\"} 0.0\n"), idle.body)
        XCTAssertTrue(idle.body.contains("vllm:kv_cache_usage_perc{model_name=\"qwen2.5-0.5b-instruct\"} 0.0\n"), idle.body)
        let body = self.chatBody(maxTokens: 10)  // 500 ms each
        let group: any EventLoopGroup = self.group
        let port = instance.port
        async let first = HTTPTestClient.send(port: port, group: group, .POST, "/v1/chat/completions", body: body)
        async let second = HTTPTestClient.send(port: port, group: group, .POST, "/v1/chat/completions", body: body)
        _ = try await self.waitForStats(instance) { _ in instance.queuedGenerations == 1 }
        let busy = try await self.get(instance, "/metrics")
        XCTAssertTrue(busy.body.contains("vllm:num_requests_waiting{model_name=\"qwen2.5-0.5b-instruct\"} 1.0\n"), busy.body)
        XCTAssertTrue(busy.body.contains("vllm:num_requests_running{model_name=\"qwen2.5-0.5b-instruct\"} 1.0\n"), busy.body)
        XCTAssertTrue(busy.body.contains("vllm:kv_cache_usage_perc{model_name=\"qwen2.5-0.5b-instruct\"} 1.0\n"), busy.body)
        _ = try await (first, second)
    }

    func testErrorRateOneAnswers500() async throws {
        let instance = try await self.start { $0.errorRate = 1 }
        let response = try await self.post(instance, "/v1/chat/completions", self.chatBody())
        XCTAssertEqual(response.status, 500)
        XCTAssertEqual(
            response.body,
            #"{"error":{"message":"simulated failure","type":"server_error","param":null,"code":null}}"#
        )
        let health = try await self.get(instance, "/healthz")
        XCTAssertEqual(health.status, 200)  // only generations fail

        instance.update { $0.errorStatus = 503 }
        let unavailable = try await self.post(instance, "/v1/completions", #"{"prompt":"x"}"#)
        XCTAssertEqual(unavailable.status, 503)
        let stats = instance.stats
        XCTAssertEqual(stats.errors, 2)
        XCTAssertEqual(stats.generations, 0)
    }

    // MARK: Lifecycle

    func testStopCutsConnectionsAndRestartServesOnTheSamePort() async throws {
        let instance = try await self.start { $0.hang = true }
        let port = instance.port
        let group: any EventLoopGroup = self.group
        // A hung process does not answer health checks.
        async let hanging = HTTPTestClient.send(port: port, group: group, .GET, "/healthz")
        _ = try await self.waitForStats(instance) { $0.inFlight == 1 }
        XCTAssertEqual(instance.stats.inFlight, 1)

        try await instance.stop()
        XCTAssertFalse(instance.isRunning)
        do {
            _ = try await hanging
            XCTFail("the hanging request should have been cut")
        } catch is ConnectionClosed {}
        do {
            _ = try await self.get(instance, "/healthz")
            XCTFail("a stopped instance should refuse connections")
        } catch {}
        let afterStop = try await self.waitForStats(instance) { $0.inFlight == 0 }
        XCTAssertEqual(afterStop.inFlight, 0)

        instance.update { $0.hang = false }
        try await instance.restart()
        XCTAssertTrue(instance.isRunning)
        XCTAssertEqual(instance.port, port)
        let restarted = try await self.get(instance, "/healthz")
        XCTAssertEqual(restarted.status, 200)
    }

    func testStatsCounters() async throws {
        let instance = try await self.start()
        _ = try await self.get(instance, "/healthz")
        _ = try await self.post(instance, "/v1/chat/completions", self.chatBody(maxTokens: 5))
        _ = try await self.post(instance, "/v1/chat/completions", self.chatBody(maxTokens: 4, stream: true))
        _ = try await self.post(instance, "/v1/embeddings", #"{"input":"a b c"}"#)
        _ = try await self.get(instance, "/nope")
        var stats = try await self.waitForStats(instance) { $0.requests == 5 && $0.inFlight == 0 }
        XCTAssertEqual(
            stats,
            SimulatorStats(
                requests: 5,
                generations: 2,
                streams: 1,
                embeddings: 1,
                errors: 0,
                promptTokens: 12 + 12 + 3,
                completionTokens: 5 + 4,
                inFlight: 0
            )
        )

        instance.resetStats()
        XCTAssertEqual(instance.stats, SimulatorStats())

        // A stream its client abandons counts as a generation but adds no completion tokens.
        instance.update { $0.tokensPerSecond = 50 }
        _ = try await self.post(instance, "/v1/chat/completions", self.chatBody(maxTokens: 50, stream: true), closeAfterFirstPart: true)
        stats = try await self.waitForStats(instance) { $0.inFlight == 0 }
        XCTAssertEqual(stats.streams, 1)
        XCTAssertEqual(stats.completionTokens, 0)
        XCTAssertEqual(stats.inFlight, 0)
        XCTAssertEqual(instance.activeGenerations, 0)
    }

    func testFleet() async throws {
        let fleet = try await SimulatorFleet.start(count: 3, basePort: 0, gpus: 2, configuration: SimulatorConfiguration(), group: self.group)
        XCTAssertEqual(fleet.instances.map(\.name), ["qwen-0", "qwen-1", "qwen-2"])
        XCTAssertEqual(fleet.instances.map(\.gpu), ["0", "1", "0"])
        XCTAssertEqual(Set(fleet.instances.map(\.port)).count, 3)
        let health = try await self.get(fleet.instances[2], "/healthz")
        XCTAssertEqual(health.body, #"{"status":"ok","model":"qwen2.5-0.5b-instruct","gpu":"0"}"#)
        try await fleet.stop()
        XCTAssertFalse(fleet.instances.contains { $0.isRunning })
    }
}
