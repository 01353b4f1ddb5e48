import Foundation
import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateTestSupport
import XCTest

/// README "When the GPUs are full", visible: the overview's `capacity`, `gpu` and `queues`,
/// the admin page's capacity panel and `/metrics`' waiting-line families, on a running gateway.
final class CapacityPanelTests: XCTestCase {
    func testTheCapacityPanelGPUTimeAndQueueMetrics() async throws {
        let h = try await AdminHarness.start()
        do {
            let data = try await h.data()
            for i in 0..<5 {
                let a = try await data.chat(key: AdminHarness.supportKey, content: "panel \(i)")
                XCTAssertEqual(a.status, 200, a.body)
            }
            await data.close()
            await h.flushLedger()

            let admin = try await h.admin()
            let auth = [("authorization", "Bearer \(h.adminKey)")]
            let api = try await admin.send(.GET, "/admin/api/overview?window=1h", headers: auth)
            XCTAssertEqual(api.status, 200, api.body)
            let capacity = try XCTUnwrap(api.json?["capacity"] as? [[String: Any]], api.body)
            XCTAssertEqual(capacity.count, 1)
            XCTAssertEqual(capacity[0]["pool"] as? String, "p")
            // The harness's pool sets no max_in_flight: its room cannot be known.
            XCTAssertEqual(capacity[0]["verdict"] as? String, "unknown")
            XCTAssertEqual(capacity[0]["summary"] as? String, "pool p: no max_in_flight set, its room is unknown")
            XCTAssertEqual(capacity[0]["forwarded"] as? Int, 5)
            let gpu = try XCTUnwrap(api.json?["gpu"] as? [[String: Any]], api.body)
            let support = try XCTUnwrap(gpu.first { $0["department"] as? String == "support" })
            XCTAssertGreaterThan(support["usedSeconds"] as? Double ?? 0, 0)
            XCTAssertEqual(support["savedByCacheSeconds"] as? Double, 0)
            XCTAssertEqual((api.json?["queues"] as? [Any])?.count, 0, "nobody waited")

            let encoded = h.adminKey.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            let login = try await admin.send(.POST, "/admin/login", body: "key=\(encoded)",
                                             headers: [("content-type", "application/x-www-form-urlencoded")])
            let cookie = try XCTUnwrap(login.headers.first(name: "set-cookie")?.split(separator: ";").first.map(String.init))
            let page = try await admin.send(.GET, "/admin?window=1h", headers: [("cookie", cookie)])
            XCTAssertEqual(page.status, 200)
            XCTAssertTrue(page.body.contains("<h2>Capacity</h2>"), page.body)
            XCTAssertTrue(page.body.contains("data-metric=\"capacity-summary\" data-pool=\"p\">pool p: no max_in_flight set, its room is unknown</b>"))
            XCTAssertTrue(page.body.contains("data-metric=\"gpu-seconds-used\" data-department=\"support\""))
            XCTAssertTrue(page.body.contains("No request has waited"))

            let metrics = try await admin.send(.GET, "/metrics")
            XCTAssertTrue(metrics.body.contains("# TYPE tollgate_queue_wait_seconds histogram"), metrics.body)
            XCTAssertTrue(metrics.body.contains("tollgate_queue_limit{lane=\"interactive\"} 1000\n"), metrics.body)
            XCTAssertTrue(metrics.body.contains("tollgate_upstream_retries_denied_total 0\n"), metrics.body)
            XCTAssertTrue(metrics.body.contains("tollgate_queue_limit{lane=\"batch\"} 5000\n"), metrics.body)
            XCTAssertTrue(metrics.body.contains("tollgate_instance_max_in_flight{instance=\"qwen-0\",pool=\"p\"} 0\n"), metrics.body)
            await admin.close()
        } catch {
            await h.stop()
            throw error
        }
        await h.stop()
    }
}
