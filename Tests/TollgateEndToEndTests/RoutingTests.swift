import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateDataPlane
import TollgateSimulator
import TollgateTestSupport
import XCTest

final class RoutingTests: XCTestCase {
    /// 1,000 requests of customer-service over 8 instances on 4 GPUs: GPU0 (2 instances) gets
    /// 3/4, the six others 1/4 — every instance within ±3 points of its configured share.
    func testWeightedRoutingOverAThousandRequests() async throws {
        let gw = try await GatewayFixture.start(instances: 8, gpus: 4)
        defer { Task { await gw.stop() } }
        let results = try await gw.load(total: 1000, concurrency: 16) { client, _ in
            try await client.chat(key: TestKeys.customerService)
        }
        XCTAssertEqual(results.filter { (try? $0.get().status) == 200 }.count, 1000)
        let served = gw.served
        XCTAssertEqual(served.reduce(0, +), 1000)
        for (i, count) in served.enumerated() {
            let expected = i % 4 == 0 ? 0.375 : 0.25 / 6
            XCTAssertEqual(Double(count) / 1000, expected, accuracy: 0.03, "instance qwen-\(i) served \(count)")
        }
        let gpu0 = Double(served[0] + served[4]) / 1000
        XCTAssertEqual(gpu0, 0.75, accuracy: 0.03)
        await gw.stop()
    }

    func testDepartmentWithoutRouteUsesThePoolEvenly() async throws {
        let gw = try await GatewayFixture.start(instances: 4, gpus: 2)
        let results = try await gw.load(total: 400, concurrency: 8) { client, _ in
            try await client.chat(key: TestKeys.engineering)
        }
        XCTAssertTrue(results.allSatisfy { (try? $0.get().status) == 200 })
        for count in gw.served { XCTAssertEqual(Double(count) / 400, 0.25, accuracy: 0.03) }
        await gw.stop()
    }

    func testLeastInFlightAvoidsTheSlowInstance() async throws {
        let gw = try await GatewayFixture.start(instances: 2, gpus: 2) { config in
            config.pools[0].policy = .leastInFlight
        }
        // qwen-0 answers in 200 ms, qwen-1 at once: least-in-flight sends most to qwen-1.
        var slow = SimulatorConfiguration()
        slow.timeToFirstToken = .milliseconds(200)
        gw.instances[0].update(slow)
        let results = try await gw.load(total: 200, concurrency: 8) { client, _ in
            try await client.chat(key: TestKeys.engineering)
        }
        XCTAssertTrue(results.allSatisfy { (try? $0.get().status) == 200 })
        // Round-robin would split 100/100; weight / (in-flight + 1) shifts the load to the fast one.
        XCTAssertGreaterThan(gw.served[1] * 2, gw.served[0] * 3, "at least 1.5x to the fast one: served \(gw.served)")
        await gw.stop()
    }

    func testModelsHealthAndRequestIDs() async throws {
        let gw = try await GatewayFixture.start(instances: 2)
        let client = try await gw.client()
        let models = try await client.send(.GET, "/v1/models", headers: [("authorization", "Bearer \(TestKeys.engineering)")])
        XCTAssertEqual(models.status, 200)
        let ids = (models.json?["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
        XCTAssertEqual(ids, ["qwen2.5-0.5b-instruct"])

        let health = try await client.send(.GET, "/healthz")
        XCTAssertEqual(health.status, 200)
        XCTAssertEqual(health.json?["instances_available"] as? Int, 2)

        let mine = try await client.chat(key: TestKeys.engineering, headers: [("x-request-id", "abc-123")])
        XCTAssertEqual(mine.headers.first(name: "x-request-id"), "abc-123")
        let generated = try await client.chat(key: TestKeys.engineering)
        XCTAssertTrue(generated.headers.first(name: "x-request-id")?.hasPrefix("req-") ?? false)
        XCTAssertEqual(generated.json?["object"] as? String, "chat.completion")
        await client.close()
        await gw.stop()
    }

    /// Every request on a keep-alive connection is authenticated by its own `Authorization`,
    /// whatever the requests before it sent (the connection remembers the last key's digest).
    func testEachRequestOnAConnectionIsAuthenticatedByItsOwnKey() async throws {
        let gw = try await GatewayFixture.start(instances: 1)
        let client = try await gw.client()
        let oneCharOff = String(TestKeys.customerService.dropLast()) + "x"
        let keys: [(String?, Int)] = [(TestKeys.customerService, 200), (oneCharOff, 401), (TestKeys.customerService, 200),
                                      (TestKeys.engineering, 200), (nil, 401), ("  " + TestKeys.engineering, 200), (oneCharOff, 401)]
        for (key, status) in keys {
            let answer = try await client.chat(key: key)
            XCTAssertEqual(answer.status, status, "\(key ?? "no key")")
        }
        await client.close()
        await gw.stop()
    }

    func testCompletionsAndEmbeddingsAreForwarded() async throws {
        let gw = try await GatewayFixture.start(instances: 1)
        let client = try await gw.client()
        let auth = [("authorization", "Bearer \(TestKeys.engineering)")]
        let completion = try await client.send(.POST, "/v1/completions", body: #"{"model":"qwen2.5-0.5b-instruct","prompt":"Say hi","max_tokens":3}"#, headers: auth)
        XCTAssertEqual(completion.status, 200)
        XCTAssertEqual(completion.json?["object"] as? String, "text_completion")
        let embedding = try await client.send(.POST, "/v1/embeddings", body: #"{"model":"qwen2.5-0.5b-instruct","input":"hello"}"#, headers: auth)
        XCTAssertEqual(embedding.status, 200)
        XCTAssertEqual(embedding.json?["object"] as? String, "list")
        XCTAssertEqual(gw.instances[0].stats.embeddings, 1)
        await client.close()
        await gw.stop()
    }
}
