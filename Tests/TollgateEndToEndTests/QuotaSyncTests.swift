import Foundation
import Atomics
import NIOCore
import NIOPosix
import TollgateCore
import TollgateDataPlane
import TollgateRedis
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// README, "Quotas": with `--redis`, if Redis is down or slow the sync rounds are skipped
/// (counted as `tollgate_quota_fallbacks_total`); the replica counts on its own and adds its
/// backlog when Redis returns.
final class QuotaSyncTests: XCTestCase {
    /// Redis dies (SIGKILL) and comes back with its data (append-only file, fsync always):
    /// what this replica used meanwhile is added to the shared counter, which then holds all of
    /// the day's use — and the replica's own counter keeps it too.
    func testTheBacklogCountedWhileRedisWasDownIsAddedWhenItReturns() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-quota-sync-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let server = try RedisServer(extraArguments: ["--appendonly", "yes", "--appendfsync", "always", "--dir", dir.path])
        defer { server.stop() }
        let gw = try await GatewayFixture.start(instances: 1, redis: try RedisConfiguration(url: server.url())) { config in
            config.departments[1].quota = QuotaLimits(tokensPerDay: 1_000_000)
            config.quotas.syncInterval = .milliseconds(20)
        }
        let client = try await gw.client()
        let loop = gw.dataPlane.group.next()
        let redis = try XCTUnwrap(gw.dataPlane.redis)
        func local() -> Int {
            let now = QuotaHeaderTests.windows(atMs: QuotaHeaderTests.nowMs())
            return gw.dataPlane.state.quotas.usage(department: 1, at: now)[.tokensPerDay] ?? -1
        }
        func shared() async -> Int? {
            let day = QuotaHeaderTests.windows(atMs: QuotaHeaderTests.nowMs()).day
            let key = "tollgate:quota:engineering:tokens-day:\(day)"
            let value = try? await loop.flatSubmit { redis.connection(for: loop).get(key) }.get()
            return value.flatMap { $0 }.flatMap { Int(String(decoding: $0, as: UTF8.self)) }
        }
        func generated() -> Int { gw.instances[0].stats.promptTokens + gw.instances[0].stats.completionTokens }

        var status = try await client.chat(key: TestKeys.engineering, content: "before", extra: #","max_tokens":5"#).status
        XCTAssertEqual(status, 200)
        let beforeOutage = generated()
        var inStep = await gw.eventually { await shared() == beforeOutage && local() == beforeOutage }
        var sharedNow = await shared()
        XCTAssertTrue(inStep, "shared \(sharedNow ?? -1), local \(local()), used \(beforeOutage)")

        server.stop()
        let fellBack = await gw.eventually {
            gw.dataPlane.counters.reduce(0) { $0 + $1.quotaFallbacks.load(ordering: .relaxed) } > 0
        }
        XCTAssertTrue(fellBack, "the skipped rounds are counted")
        for i in 0..<3 {
            status = try await client.chat(key: TestKeys.engineering, content: "during \(i)", extra: #","max_tokens":7"#).status
            XCTAssertEqual(status, 200, "served on the replica's own counters")
        }
        let total = generated()
        XCTAssertGreaterThan(total, beforeOutage)
        let counted = await gw.eventually { local() == total }
        XCTAssertTrue(counted, "local \(local()), used \(total)")

        try server.start()
        inStep = await gw.eventually(timeout: .seconds(10)) { await shared() == total && local() == total }
        sharedNow = await shared()
        XCTAssertTrue(inStep, "backlog added: shared \(sharedNow ?? -1), local \(local()), used \(total) (\(beforeOutage) before the outage)")
        await client.close()
        await gw.stop()
    }
}
