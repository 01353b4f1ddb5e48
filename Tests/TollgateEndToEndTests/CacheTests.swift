import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateDataPlane
import TollgateRedis
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// The Redis response cache, against a real redis-server on a private port.
final class CacheTests: XCTestCase {
    var server: RedisServer!

    override func setUp() async throws {
        server = try RedisServer()
    }

    override func tearDown() async throws {
        server?.stop()
    }

    func start(instances: Int = 2, configure: (inout GatewayConfiguration) -> Void = { _ in }) async throws -> GatewayFixture {
        try await GatewayFixture.start(instances: instances, redis: try RedisConfiguration(url: server.url()), configure: configure)
    }

    var generations: (GatewayFixture) -> Int = { gw in gw.instances.reduce(0) { $0 + $1.stats.generations } }

    func testSecondIdenticalRequestIsAHitThatNeverReachesAnInstance() async throws {
        let gw = try await start()
        let client = try await gw.client()
        let body = #"{"model":"qwen2.5-0.5b-instruct","temperature":0,"messages":[{"role":"user","content":"What are your opening hours?"}]}"#
        let auth = [("authorization", "Bearer \(TestKeys.engineering)")]
        let first = try await client.send(.POST, "/v1/chat/completions", body: body, headers: auth)
        XCTAssertEqual(first.status, 200)
        XCTAssertEqual(first.headers.first(name: "x-cache"), "MISS")
        try await Task.sleep(for: .milliseconds(100))  // the store is off the response path
        let upstream = generations(gw)
        let second = try await client.send(.POST, "/v1/chat/completions", body: body, headers: auth)
        XCTAssertEqual(second.status, 200)
        XCTAssertEqual(second.headers.first(name: "x-cache"), "HIT")
        XCTAssertNotNil(second.headers.first(name: "age"))
        XCTAssertEqual(second.body, first.body, "the stored answer, byte for byte")
        XCTAssertEqual(generations(gw), upstream, "the hit never reached an instance")

        // Key order and whitespace don't matter; stream and user don't either.
        let reordered = #"{ "messages" : [ {"content":"What are your opening hours?", "role":"user"} ], "temperature": 0.0, "user": "u-1", "model":"qwen2.5-0.5b-instruct" }"#
        let third = try await client.send(.POST, "/v1/chat/completions", body: reordered, headers: auth)
        XCTAssertEqual(third.headers.first(name: "x-cache"), "HIT")
        XCTAssertEqual(generations(gw), upstream)

        // Another department misses: no department receives another's answer.
        let other = try await client.send(.POST, "/v1/chat/completions", body: body, headers: [("authorization", "Bearer \(TestKeys.customerService)")])
        XCTAssertEqual(other.headers.first(name: "x-cache"), "MISS")
        XCTAssertEqual(generations(gw), upstream + 1)
        await client.close()
        await gw.stop()
    }

    func testOnlyDeterministicRequestsAreCachedUnlessConfigured() async throws {
        let gw = try await start { config in
            config.departments[0].cache = CachePolicy(mode: .always)  // customer-service caches everything
        }
        let client = try await gw.client()
        for key in [TestKeys.engineering, TestKeys.customerService] {
            for _ in 0..<2 {
                let a = try await client.chat(key: key, content: "tell me a joke", extra: #","temperature":0.7"#)
                XCTAssertEqual(a.status, 200)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let again = try await client.chat(key: TestKeys.customerService, content: "tell me a joke", extra: #","temperature":0.7"#)
        XCTAssertEqual(again.headers.first(name: "x-cache"), "HIT", "mode always")
        let engineering = try await client.chat(key: TestKeys.engineering, content: "tell me a joke", extra: #","temperature":0.7"#)
        XCTAssertNil(engineering.headers.first(name: "x-cache"), "temperature 0.7 is not cached by default")
        let seeded1 = try await client.chat(key: TestKeys.engineering, content: "seeded", extra: #","temperature":0.7,"seed":42"#)
        XCTAssertEqual(seeded1.headers.first(name: "x-cache"), "MISS", "a seed makes it deterministic")
        await client.close()
        await gw.stop()
    }

    func testNoCacheAndNoStore() async throws {
        let gw = try await start()
        let client = try await gw.client()
        let extra = #","temperature":0"#
        let stored = try await client.chat(key: TestKeys.engineering, content: "a", extra: extra, headers: [("cache-control", "no-store")])
        XCTAssertEqual(stored.headers.first(name: "x-cache"), "MISS")
        try await Task.sleep(for: .milliseconds(100))
        let notStored = try await client.chat(key: TestKeys.engineering, content: "a", extra: extra)
        XCTAssertEqual(notStored.headers.first(name: "x-cache"), "MISS", "no-store: nothing was stored")
        try await Task.sleep(for: .milliseconds(100))
        let skipped = try await client.chat(key: TestKeys.engineering, content: "a", extra: extra, headers: [("cache-control", "No-Cache, max-age=0")])
        XCTAssertEqual(skipped.headers.first(name: "x-cache"), "BYPASS", "no-cache: no lookup")
        let hit = try await client.chat(key: TestKeys.engineering, content: "a", extra: extra)
        XCTAssertEqual(hit.headers.first(name: "x-cache"), "HIT")
        await client.close()
        await gw.stop()
    }

    func testErrorsAreNeverCached() async throws {
        let gw = try await start(instances: 1) { config in config.retry.attempts = 1 }
        var broken = SimulatorConfiguration()
        broken.errorRate = 1
        broken.errorStatus = 500
        gw.instances[0].update(broken)
        let client = try await gw.client()
        let first = try await client.chat(key: TestKeys.engineering, extra: #","temperature":0"#)
        XCTAssertEqual(first.status, 500)
        gw.instances[0].update(SimulatorConfiguration())
        try await Task.sleep(for: .milliseconds(100))
        let second = try await client.chat(key: TestKeys.engineering, extra: #","temperature":0"#)
        XCTAssertEqual(second.status, 200)
        XCTAssertEqual(second.headers.first(name: "x-cache"), "MISS")
        await client.close()
        await gw.stop()
    }

    /// A streamed miss is assembled and stored; a streamed hit is replayed as SSE; a JSON
    /// request hits what a stream stored.
    func testStreamsAreStoredAndReplayed() async throws {
        let gw = try await start(instances: 1)
        let client = try await gw.client()
        let extra = #","temperature":0,"max_tokens":5"#
        let miss = try await client.chat(key: TestKeys.engineering, content: "stream me", extra: extra, stream: true)
        XCTAssertEqual(miss.headers.first(name: "x-cache"), "MISS")
        try await Task.sleep(for: .milliseconds(100))
        let hit = try await client.chat(key: TestKeys.engineering, content: "stream me", extra: extra, stream: true)
        XCTAssertEqual(hit.headers.first(name: "x-cache"), "HIT")
        XCTAssertEqual(hit.headers.first(name: "content-type"), "text/event-stream")
        XCTAssertEqual(hit.events.last, "[DONE]")
        func text(_ a: Answer) -> String {
            a.events.dropLast().compactMap { event -> String? in
                let json = try? JSONSerialization.jsonObject(with: Data(event.utf8)) as? [String: Any]
                let choice = (json?["choices"] as? [[String: Any]])?.first
                return (choice?["delta"] as? [String: Any])?["content"] as? String
            }.joined()
        }
        XCTAssertEqual(text(hit), text(miss), "the replay says what the instance said")
        XCTAssertFalse(text(hit).isEmpty)
        let json = try await client.chat(key: TestKeys.engineering, content: "stream me", extra: extra)
        XCTAssertEqual(json.headers.first(name: "x-cache"), "HIT")
        let content = ((json.json?["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String
        XCTAssertEqual(content, text(miss))
        XCTAssertEqual(gw.instances[0].stats.generations, 1)
        await client.close()
        await gw.stop()
    }

    func testFiftyConcurrentIdenticalMissesCauseOneUpstreamCall() async throws {
        var slow = SimulatorConfiguration()
        slow.timeToFirstToken = .milliseconds(300)
        let gw = try await start(instances: 2) { _ in }
        for sim in gw.instances { sim.update(slow) }
        let results = try await gw.load(total: 50, concurrency: 50) { client, _ in
            try await client.chat(key: TestKeys.engineering, content: "the same question", extra: #","temperature":0"#)
        }
        let answers = results.compactMap { try? $0.get() }
        XCTAssertEqual(answers.count, 50)
        XCTAssertTrue(answers.allSatisfy { $0.status == 200 })
        XCTAssertEqual(Set(answers.map(\.body)).count, 1, "everyone got the same answer")
        XCTAssertEqual(generations(gw), 1, "one upstream call for 50 identical misses")
        await gw.stop()
    }

    /// Redis killed during a load: every request still succeeds (bypassing the cache); once
    /// Redis is back, hits resume without a gateway restart.
    func testRedisOutageNeverFailsARequestAndHitsResume() async throws {
        let gw = try await start(instances: 2)
        let redis = server!
        // Redis is killed once 100 of the 300 requests have started: the rest run during the outage.
        let results = try await gw.load(total: 300, concurrency: 8) { client, i in
            if i == 100 { redis.stop() }
            return try await client.chat(key: TestKeys.engineering, content: "question \(i % 10)", extra: #","temperature":0"#)
        }
        XCTAssertEqual(results.count, 300)
        XCTAssertTrue(results.allSatisfy { (try? $0.get().status) == 200 }, "no request failed")
        let bypassed = results.contains { (try? $0.get().headers.first(name: "x-cache")) == "BYPASS" }
        XCTAssertTrue(bypassed, "requests during the outage bypassed the cache")

        try server.start()
        let client = try await gw.client()
        let resumed = await gw.eventually(timeout: .seconds(10)) {
            _ = try? await client.chat(key: TestKeys.engineering, content: "after", extra: #","temperature":0"#)
            try? await Task.sleep(for: .milliseconds(50))
            let a = try? await client.chat(key: TestKeys.engineering, content: "after", extra: #","temperature":0"#)
            return a?.headers.first(name: "x-cache") == "HIT"
        }
        XCTAssertTrue(resumed, "hits resume once Redis is back")
        await client.close()
        await gw.stop()
    }

    /// The official `openai` package reads a streamed hit the gateway replays.
    func testOpenAISDKReadsAReplayedStream() async throws {
        let gw = try await start(instances: 1)
        let result = try PythonSDK.run("openai_cache_check.py", baseURL: "http://127.0.0.1:\(gw.port)/v1", key: TestKeys.engineering)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(gw.instances[0].stats.generations, 1, result.output)
        await gw.stop()
    }

    /// A hit is written as one serialized buffer past the HTTP encoder: pipelined after a
    /// forwarded miss and before a request that closes, everything comes back whole and in order.
    func testPipelinedHitsAfterAMissAndBeforeAClose() async throws {
        let gw = try await start(instances: 1)
        let body = #"{"model":"qwen2.5-0.5b-instruct","temperature":0,"messages":[{"role":"user","content":"pipelined hit"}]}"#
        func request(_ id: String, close: Bool = false) -> String {
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: \(id)\r\n\(close ? "connection: close\r\n" : "")authorization: Bearer \(TestKeys.engineering)\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)"
        }
        let raw = try await gw.raw()
        try await raw.write(request("one") + request("two") + request("three") + request("four", close: true))
        let all = try await raw.readUntilClosed()
        let responses = all.components(separatedBy: "HTTP/1.1 ").dropFirst()
        XCTAssertEqual(responses.count, 4, all)
        let ids = all.components(separatedBy: "\r\n").filter { $0.lowercased().hasPrefix("x-request-id: ") }.map { String($0.dropFirst(14)) }
        XCTAssertEqual(ids, ["one", "two", "three", "four"])
        let outcomes = all.components(separatedBy: "\r\n").filter { $0.lowercased().hasPrefix("x-cache: ") }.map { String($0.dropFirst(9)) }
        XCTAssertEqual(outcomes, ["MISS", "HIT", "HIT", "HIT"])
        let bodies = responses.map { $0.components(separatedBy: "\r\n\r\n").last ?? "" }
        XCTAssertEqual(Set(bodies).count, 1, "the same answer each time: \(bodies)")
        XCTAssertTrue(responses.last?.lowercased().contains("connection: close") == true)
        XCTAssertEqual(generations(gw), 1)
        await gw.stop()
    }

    /// An entry whose content type would break the head (written into Redis by someone else)
    /// is not served: the request goes upstream.
    func testAnEntryWithAnUnsafeContentTypeIsNotServed() async throws {
        let gw = try await start(instances: 1)
        let client = try await gw.client()
        let content = "planted"
        let body = Array(#"{"model":"qwen2.5-0.5b-instruct","temperature":0,"messages":[{"role":"user","content":"\#(content)"}]}"#.utf8)
        let key = CacheKey.make(namespace: "department:engineering", endpoint: "chat", model: "qwen2.5-0.5b-instruct",
                                canonicalBody: try CanonicalJSON.canonicalize(body))
        let planted = CachedAnswer(contentType: "application/json\r\nx-evil: 1", body: Array("{}".utf8), createdMs: 0, model: "m")
        let loop = gw.dataPlane.group.next()
        let redis = try XCTUnwrap(gw.dataPlane.redis)
        let redisKey = "tollgate:cache:department:engineering:\(key.hex)"
        _ = try await loop.flatSubmit { redis.connection(for: loop).set(redisKey, to: planted.encoded(), expiresIn: .seconds(60)) }.get()
        let answer = try await client.chat(key: TestKeys.engineering, content: content, extra: #","temperature":0"#)
        XCTAssertEqual(answer.status, 200)
        XCTAssertNil(answer.headers.first(name: "x-evil"))
        XCTAssertEqual(answer.headers.first(name: "x-cache"), "MISS")
        XCTAssertEqual(generations(gw), 1, "answered by an instance")
        // The planted entry was the one looked up: the instance's answer replaced it.
        try await Task.sleep(for: .milliseconds(100))
        let stored = try await loop.flatSubmit { redis.connection(for: loop).get(redisKey) }.get()
        let replaced = try CachedAnswer.decode(try XCTUnwrap(stored))
        XCTAssertEqual(replaced.contentType, "application/json")
        XCTAssertEqual(replaced.body, Array(answer.body.utf8))
        await client.close()
        await gw.stop()
    }

    func testPurgeOneDepartmentOrAll() async throws {
        let gw = try await start(instances: 1)
        let client = try await gw.client()
        func ask(_ key: String) async throws -> String? {
            try await client.chat(key: key, content: "purge me", extra: #","temperature":0"#).headers.first(name: "x-cache")
        }
        _ = try await ask(TestKeys.engineering)
        _ = try await ask(TestKeys.customerService)
        try await Task.sleep(for: .milliseconds(100))
        var engineering = try await ask(TestKeys.engineering)
        XCTAssertEqual(engineering, "HIT")
        let removed = try await gw.dataPlane.purgeCache(department: "engineering")
        XCTAssertEqual(removed, 1)
        engineering = try await ask(TestKeys.engineering)
        XCTAssertEqual(engineering, "MISS", "purged")
        var support = try await ask(TestKeys.customerService)
        XCTAssertEqual(support, "HIT", "another department's entries stay")
        let all = try await gw.dataPlane.purgeCache(department: nil)
        XCTAssertEqual(all, 2)
        support = try await ask(TestKeys.customerService)
        XCTAssertEqual(support, "MISS")
        await client.close()
        await gw.stop()
    }
}
