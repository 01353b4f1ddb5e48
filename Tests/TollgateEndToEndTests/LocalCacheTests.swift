import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
@testable import TollgateDataPlane
import TollgateRedis
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// The in-process tier in front of Redis and the memo of raw bodies' cache keys, each event
/// loop's own (`LocalCache.swift`).
final class LocalCacheTests: XCTestCase {
    private func answer(_ text: String, createdMs: Int64 = 0, bytes: Int? = nil) -> CachedAnswer {
        CachedAnswer(body: bytes.map { Array(repeating: UInt8(ascii: "x"), count: $0) } ?? Array(text.utf8), createdMs: createdMs, model: "m")
    }

    func testAnEntryLivesForItsLifetimeOrItsTTLWhicheverEndsFirst() {
        let tier = LocalCacheTier(lifetimeMs: 2_000)
        tier.put("k", answer: answer("a", createdMs: 0), ttlMs: 3_600_000, nowMs: 0)
        XCTAssertNotNil(tier.get("k", nowMs: 1_999))
        XCTAssertNil(tier.get("k", nowMs: 2_000), "asked of Redis again after the lifetime")
        XCTAssertEqual(tier.count, 0)
        // An entry whose own TTL ends sooner goes then.
        tier.put("short", answer: answer("b", createdMs: 1_000), ttlMs: 500, nowMs: 1_200)
        XCTAssertNotNil(tier.get("short", nowMs: 1_499))
        XCTAssertNil(tier.get("short", nowMs: 1_500))
        // Already expired: not kept at all.
        tier.put("old", answer: answer("c", createdMs: 0), ttlMs: 100, nowMs: 5_000)
        XCTAssertNil(tier.get("old", nowMs: 5_000))
    }

    func testOldestEntriesGoFirstBeyondTheCountOrTheByteBudget() {
        let byCount = LocalCacheTier(capacity: 3)
        for i in 0..<4 { byCount.put("k\(i)", answer: answer("\(i)"), ttlMs: 60_000, nowMs: 0) }
        XCTAssertTrue(byCount.get("k0", nowMs: 1) == nil)
        XCTAssertEqual((1..<4).compactMap { byCount.get("k\($0)", nowMs: 1) }.count, 3)

        let byBytes = LocalCacheTier(capacity: 100, byteBudget: 8_000)
        for i in 0..<5 { byBytes.put("k\(i)", answer: answer("", bytes: 1_000), ttlMs: 60_000, nowMs: 0) }
        XCTAssertEqual(byBytes.count, 5)
        byBytes.put("big", answer: answer("", bytes: 900), ttlMs: 60_000, nowMs: 0)
        for i in 5..<7 { byBytes.put("k\(i)", answer: answer("", bytes: 1_000), ttlMs: 60_000, nowMs: 0) }
        XCTAssertEqual(byBytes.count, 8, "7,900 bytes")
        byBytes.put("k7", answer: answer("", bytes: 1_000), ttlMs: 60_000, nowMs: 0)
        XCTAssertTrue(byBytes.get("k0", nowMs: 1) == nil, "over 8,000 bytes: the oldest went")
        XCTAssertEqual(byBytes.count, 8)
        XCTAssertNotNil(byBytes.get("k7", nowMs: 1))
        byBytes.put("huge", answer: answer("", bytes: 2_000), ttlMs: 60_000, nowMs: 0)
        XCTAssertTrue(byBytes.get("huge", nowMs: 1) == nil, "an answer over an eighth of the budget is not kept")
    }

    /// README: each loop keeps "up to 1,024 answers and 32 MB". The tier every loop gets, at its
    /// defaults: the 1,025th answer evicts the first; 33 answers of 1 MiB keep 32 of them.
    func testEachLoopsTierHoldsAtMost1024AnswersAnd32MB() async throws {
        let gw = try await GatewayFixture.start(instances: 1)
        var tiers: [(Int, Int, Int64)] = []
        for bound in gw.dataPlane.contexts.values {
            tiers.append(try await bound.eventLoop.submit {
                let tier = bound.value.localCache
                return (tier.capacity, tier.byteBudget, tier.lifetimeMs)
            }.get())
        }
        await gw.stop()
        XCTAssertEqual(tiers.count, 2)
        for (capacity, budget, lifetime) in tiers {
            XCTAssertEqual(capacity, 1024)
            XCTAssertEqual(budget, 32 * 1024 * 1024)
            XCTAssertEqual(lifetime, 2_000)
        }

        let byCount = LocalCacheTier()
        for i in 0...1024 { byCount.put("k\(i)", answer: answer("\(i)"), ttlMs: 60_000, nowMs: 0) }
        XCTAssertEqual(byCount.count, 1024)
        XCTAssertNil(byCount.get("k0", nowMs: 1), "the oldest went")
        XCTAssertNotNil(byCount.get("k1", nowMs: 1))
        XCTAssertNotNil(byCount.get("k1024", nowMs: 1))

        let byBytes = LocalCacheTier()
        for i in 0..<33 { byBytes.put("m\(i)", answer: answer("", bytes: 1024 * 1024), ttlMs: 60_000, nowMs: 0) }
        XCTAssertEqual(byBytes.count, 32, "32 MiB of answers at most")
        XCTAssertNil(byBytes.get("m0", nowMs: 1))
        XCTAssertNotNil(byBytes.get("m32", nowMs: 1))
    }

    func testPurgeByPrefixOrAll() {
        let tier = LocalCacheTier()
        for key in ["tollgate:cache:department:a:1", "tollgate:cache:department:ab:2", "tollgate:cache:shared:3"] {
            tier.put(key, answer: answer(key), ttlMs: 60_000, nowMs: 0)
        }
        tier.purge(prefix: "tollgate:cache:department:a:")
        XCTAssertNil(tier.get("tollgate:cache:department:a:1", nowMs: 1))
        XCTAssertNotNil(tier.get("tollgate:cache:department:ab:2", nowMs: 1), "another department whose name starts alike stays")
        XCTAssertNotNil(tier.get("tollgate:cache:shared:3", nowMs: 1))
        tier.purge(prefix: nil)
        XCTAssertEqual(tier.count, 0)
    }

    func testTheMemoAnswersOnlyForTheSameBytesInTheSameScope() throws {
        let memo = CacheKeyMemo()
        let body = Array(#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#.utf8)
        let key = CacheKey.make(namespace: "department:a", endpoint: "chat", model: "m", canonicalBody: body)
        let slot = body.withUnsafeBytes { memo.lookup($0, namespace: "department:a", endpoint: "chat", model: "m").slot }
        memo.store(.init(body: body, namespace: "department:a", endpoint: "chat", model: "m", key: key, redisKey: "r", preview: nil), slot: slot)

        let same = body.withUnsafeBytes { memo.lookup($0, namespace: "department:a", endpoint: "chat", model: "m") }
        XCTAssertEqual(same.entry?.key, key)
        let otherDepartment = body.withUnsafeBytes { memo.lookup($0, namespace: "department:b", endpoint: "chat", model: "m") }
        XCTAssertNil(otherDepartment.entry)
        var changed = body
        changed[changed.count - 5] = UInt8(ascii: "o")  // "ho": same length, other bytes
        let other = changed.withUnsafeBytes { memo.lookup($0, namespace: "department:a", endpoint: "chat", model: "m") }
        XCTAssertNil(other.entry)
        // Even stored in the very slot of the first body, another body is never taken for it.
        let forged = changed.withUnsafeBytes { raw in
            memo.store(.init(body: body, namespace: "department:a", endpoint: "chat", model: "m", key: key, redisKey: "r", preview: nil),
                       slot: memo.lookup(raw, namespace: "department:a", endpoint: "chat", model: "m").slot)
            return memo.lookup(raw, namespace: "department:a", endpoint: "chat", model: "m")
        }
        XCTAssertNil(forged.entry, "the bytes are compared, not only the hash")
    }

    /// Live: a hit is served from the loop's memory, so an entry removed from Redis behind the
    /// gateway's back (another replica's purge, an expiry) is still served — for at most the
    /// tier's lifetime, then the request misses and goes upstream.
    func testAnEntryGoneFromRedisIsServedForAtMostTheLifetime() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let gw = try await GatewayFixture.start(instances: 1, redis: try RedisConfiguration(url: server.url()))
        let client = try await gw.client()
        func ask() async throws -> String? {
            try await client.chat(key: TestKeys.engineering, content: "from memory", extra: #","temperature":0"#).headers.first(name: "x-cache")
        }
        let first = try await ask()
        XCTAssertEqual(first, "MISS")
        try await Task.sleep(for: .milliseconds(100))
        let second = try await ask()
        XCTAssertEqual(second, "HIT")
        let loop = gw.dataPlane.group.next()
        let redis = try XCTUnwrap(gw.dataPlane.redis)
        _ = try await loop.flatSubmit { redis.connection(for: loop).send(command: ["FLUSHALL"]) }.get()
        let fromMemory = try await ask()
        XCTAssertEqual(fromMemory, "HIT", "still in this loop's memory")
        XCTAssertEqual(gw.instances[0].stats.generations, 1)
        try await Task.sleep(for: .milliseconds(LocalCacheTier.defaultLifetimeMs + 300))
        let afterLifetime = try await ask()
        XCTAssertEqual(afterLifetime, "MISS", "Redis asked again after the lifetime")
        XCTAssertEqual(gw.instances[0].stats.generations, 2)
        await client.close()
        await gw.stop()
    }
}
