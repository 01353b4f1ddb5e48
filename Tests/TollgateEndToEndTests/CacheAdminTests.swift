import Foundation
import NIOCore
import NIOHTTP1
import TollgateDataPlane
import TollgateRedis
import TollgateServer
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// README, "Response cache": a hit carries `Age`; `DELETE /admin/api/cache[?department=NAME]`
/// purges one department's cached answers, or all, answering `{"purged": N}` — and a purge
/// through this gateway's admin API clears every loop's in-memory tier at once.
final class CacheAdminTests: XCTestCase {
    private func startWithRedis() async throws -> (AdminHarness, RedisServer) {
        let server = try RedisServer()
        let h = try await AdminHarness.start(redis: server.url())
        let up = await eventually { h.gateway.dataPlane.redis?.availableConnections == 2 }
        XCTAssertTrue(up, "both loops' Redis connections are up")
        return (h, server)
    }

    private func eventually(timeout: Duration = .seconds(5), _ condition: () async -> Bool) async -> Bool {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return await condition()
    }

    private static func wallMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// `Age` is the whole seconds since the answer was stored.
    func testAHitsAgeIsTheSecondsSinceTheAnswerWasStored() async throws {
        let (h, server) = try await startWithRedis()
        defer { server.stop() }
        let data = try await h.data()
        let sent = Self.wallMs()
        let miss = try await data.chat(key: AdminHarness.supportKey, content: "how old", extra: #","temperature":0"#)
        let stored = Self.wallMs()  // the answer is stored when it has been read in full: by now, or just after
        XCTAssertEqual(miss.headers.first(name: "x-cache"), "MISS")
        XCTAssertNil(miss.headers.first(name: "age"))
        // The quantity under test is an age: let one build up.
        try await Task.sleep(for: .milliseconds(2_300))
        let asked = Self.wallMs()
        let hit = try await data.chat(key: AdminHarness.supportKey, content: "how old", extra: #","temperature":0"#)
        let answered = Self.wallMs()
        XCTAssertEqual(hit.headers.first(name: "x-cache"), "HIT")
        let age = try XCTUnwrap(hit.headers.first(name: "age").flatMap { Int64($0) }, "\(hit.headers)")
        // Stored between `sent` and a little after `stored`; read between `asked` and `answered`.
        XCTAssertTrue(((asked - stored) / 1000)...((answered - sent) / 1000) ~= age, "Age \(age)")
        XCTAssertGreaterThanOrEqual(age, 2)
        await data.close()
        await h.stop()
    }

    func testDeletingTheCacheOverTheAdminAPIPurgesOneDepartmentOrAll() async throws {
        let (h, server) = try await startWithRedis()
        defer { server.stop() }
        let data = try await h.data()
        let admin = try await h.admin()
        let asAdmin = [("authorization", "Bearer \(h.adminKey)")]
        func cache(_ key: String) async throws -> String? {
            try await data.chat(key: key, content: "purge me", extra: #","temperature":0"#).headers.first(name: "x-cache")
        }
        /// Asks until the answer is served from the cache (it is stored just after the miss's answer).
        func cached(_ key: String) async -> Bool { await eventually { (try? await cache(key)) == "HIT" } }

        var support = try await cache(AdminHarness.supportKey)
        XCTAssertEqual(support, "MISS")
        var engineering = try await cache(AdminHarness.engineeringKey)
        XCTAssertEqual(engineering, "MISS")
        var hits = await cached(AdminHarness.supportKey)
        XCTAssertTrue(hits)
        hits = await cached(AdminHarness.engineeringKey)
        XCTAssertTrue(hits)

        // All of them: both departments' answers, from Redis and from the loops' memory.
        var purge = try await admin.send(.DELETE, "/admin/api/cache", headers: asAdmin)
        XCTAssertEqual(purge.status, 200, purge.body)
        XCTAssertEqual(purge.json?["purged"] as? Int, 2, purge.body)
        support = try await cache(AdminHarness.supportKey)
        XCTAssertEqual(support, "MISS", "gone, also from the in-memory tier")
        engineering = try await cache(AdminHarness.engineeringKey)
        XCTAssertEqual(engineering, "MISS")
        hits = await cached(AdminHarness.supportKey)
        XCTAssertTrue(hits)
        hits = await cached(AdminHarness.engineeringKey)
        XCTAssertTrue(hits)

        // One department's: the other's stays.
        purge = try await admin.send(.DELETE, "/admin/api/cache?department=support", headers: asAdmin)
        XCTAssertEqual(purge.status, 200, purge.body)
        XCTAssertEqual(purge.json?["purged"] as? Int, 1, purge.body)
        support = try await cache(AdminHarness.supportKey)
        XCTAssertEqual(support, "MISS")
        engineering = try await cache(AdminHarness.engineeringKey)
        XCTAssertEqual(engineering, "HIT", "another department's answers stay")

        purge = try await admin.send(.DELETE, "/admin/api/cache?department=nobody", headers: asAdmin)
        XCTAssertEqual(purge.status, 400, purge.body)
        XCTAssertEqual(purge.errorCode, "unknown_department")
        purge = try await admin.send(.DELETE, "/admin/api/cache")
        XCTAssertEqual(purge.status, 401, "the admin key only")
        purge = try await admin.send(.DELETE, "/admin/api/cache", headers: [("authorization", "Bearer \(AdminHarness.supportKey)")])
        XCTAssertEqual(purge.status, 403)
        await data.close()
        await admin.close()
        await h.stop()
    }
}
