import Foundation
import NIOCore
import NIOHTTP1
import TollgateDataPlane
import TollgateRedis
import TollgateServer
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// README, "Metrics": the values `/metrics` claims for what goes wrong — failed tries and their
/// retries, ejections and instance health, requests no instance could take, open client
/// connections, and Redis outages with the quota sync rounds they skipped. (`MetricsTests`
/// checks the happy path.)
final class FailureMetricsTests: XCTestCase {
    private func scrape(_ admin: HTTPTestClient) async throws -> [String: PrometheusParser.Family] {
        let answer = try await admin.send(.GET, "/metrics")
        XCTAssertEqual(answer.status, 200)
        return try PrometheusParser.parse(answer.body)
    }

    private func eventually(_ condition: () async throws -> Bool) async throws -> Bool {
        for _ in 0..<250 {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }

    func testFailuresEjectionsOutagesAndConnectionsAreCounted() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let h = try await AdminHarness.start(redis: server.url())
        let admin = try await h.admin()
        let up = try await eventually { h.gateway.dataPlane.redis?.availableConnections == 2 }
        XCTAssertTrue(up)

        // Two client connections open: `tollgate_active_connections` 2 (the admin's is the control plane's).
        let first = try await h.data(), second = try await h.data()
        for client in [first, second] {
            let a = try await client.chat(key: AdminHarness.supportKey)
            XCTAssertEqual(a.status, 200, a.body)
        }
        var m = try await scrape(admin)
        XCTAssertEqual(m["tollgate_active_connections"]?.value(), 2)

        // qwen-0 refuses connections: each try on it fails and is retried on qwen-1, until its
        // third failure (max_fails 3) ejects it.
        try await h.instances[0].stop()
        var answered = 0
        for _ in 0..<100 where h.gateway.dataPlane.state.availability[0] == .up {
            let a = try await first.chat(key: AdminHarness.supportKey)
            XCTAssertEqual(a.status, 200, "retried on qwen-1: \(a.body)")
            answered += 1
        }
        XCTAssertNotEqual(h.gateway.dataPlane.state.availability[0], .up, "ejected after \(answered) requests")
        m = try await scrape(admin)
        let failures = try XCTUnwrap(m["tollgate_upstream_failures_total"]?.value())
        XCTAssertGreaterThanOrEqual(failures, 3)
        XCTAssertEqual(m["tollgate_upstream_retries_total"]?.value(), failures, "every failed try was retried")
        // Tries *sent*: a refused connect sends nothing; every sent try reached qwen-1.
        XCTAssertEqual(m["tollgate_upstream_requests_total"]?.value(), Double(2 + answered))
        let instance0 = ["instance": "qwen-0", "pool": "p"], instance1 = ["instance": "qwen-1", "pool": "p"]
        XCTAssertEqual(m["tollgate_instance_ejections_total"]?.sum(instance0), 1)
        XCTAssertEqual(m["tollgate_instance_ejections_total"]?.sum(instance1), 0)
        XCTAssertEqual(m["tollgate_instance_ejected"]?.sum(instance0), 1)
        XCTAssertEqual(m["tollgate_instance_up"]?.sum(instance0), 0)
        XCTAssertEqual(m["tollgate_instance_up"]?.sum(instance1), 1)
        XCTAssertEqual(m["tollgate_instance_probe_up"]?.sum(instance0), 1, "ejected by failures, not by probes (off here)")
        XCTAssertEqual(m["tollgate_no_instance_total"]?.value(), 0)

        // qwen-1 goes too: a request tries it, fails, and finds no other instance to try.
        try await h.instances[1].stop()
        for _ in 0..<2 {
            let a = try await first.chat(key: AdminHarness.supportKey)
            XCTAssertTrue([502, 503].contains(a.status), a.body)
        }
        m = try await scrape(admin)
        XCTAssertEqual(m["tollgate_no_instance_total"]?.value(), 2)

        // Redis dies: both loops' connections go down once, and the quota sync rounds are skipped.
        server.stop()
        var outage = try await eventually {
            let m = try await self.scrape(admin)
            return m["tollgate_redis_outages_total"]?.value() == 2 && m["tollgate_redis_connections_available"]?.value() == 0
        }
        XCTAssertTrue(outage, "two outages counted, no connection available")
        outage = try await eventually { try await self.scrape(admin)["tollgate_quota_fallbacks_total"]?.value() ?? 0 > 0 }
        XCTAssertTrue(outage, "skipped sync rounds counted")
        m = try await scrape(admin)
        XCTAssertEqual(m["tollgate_redis_connections"]?.value(), 2)

        await first.close()
        await second.close()
        let closed = try await eventually { try await self.scrape(admin)["tollgate_active_connections"]?.value() == 0 }
        XCTAssertTrue(closed, "closed connections leave the gauge")
        await admin.close()
        await h.stop()
    }
}
