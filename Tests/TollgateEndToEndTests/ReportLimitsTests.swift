import Foundation
import NIOCore
import NIOHTTP1
import TollgateDataPlane
import TollgateLedger
import TollgateServer
import TollgateTestSupport
import XCTest

/// A report reads and sorts every latency of its range on a small thread pool: a key holder
/// asking for `from=0001-01-01&to=9999-12-31`, or many reports at once, must not tie it up.
final class ReportLimitsTests: XCTestCase {
    func testAReportCoversAtMostAYear() async throws {
        let h = try await AdminHarness.start()
        defer { Task { await h.stop() } }
        let data = try await h.data()
        let admin = try await h.admin()
        let asSupport = [("authorization", "Bearer \(AdminHarness.supportKey)")]
        let asAdmin = [("authorization", "Bearer \(h.adminKey)")]
        for query in ["from=0001-01-01&to=9999-12-31", "from=2025-01-01&to=2026-01-02", "from=2026-01-01&to=2025-12-31",
                      "from=99999-01-01&to=99999-01-02", "period=0000-01", "period=99999-01"] {
            var a = try await data.send(.GET, "/v1/usage?\(query)", headers: asSupport)
            XCTAssertEqual(a.status, 400, "\(query): \(a.body)")
            XCTAssertEqual(a.errorType, "invalid_request_error", a.body)
            a = try await admin.send(.GET, "/admin/api/reports/quota?\(query)", headers: asAdmin)
            XCTAssertEqual(a.status, 400, "\(query): \(a.body)")
            XCTAssertEqual(a.errorType, "invalid_request_error", a.body)
        }
        let tooLong = try await data.send(.GET, "/v1/usage?from=2020-01-01&to=2029-12-31", headers: asSupport)
        XCTAssertEqual(tooLong.status, 400, tooLong.body)
        XCTAssertTrue(tooLong.body.contains("at most 366 days"), tooLong.body)
        let ancient = try await data.send(.GET, "/v1/usage?from=0001-01-01&to=9999-12-31", headers: asSupport)
        XCTAssertTrue(ancient.body.contains("1970"), "the message says which years are allowed: \(ancient.body)")
        // A whole (leap) year is fine.
        var a = try await data.send(.GET, "/v1/usage?from=2028-01-01&to=2028-12-31", headers: asSupport)
        XCTAssertEqual(a.status, 200, a.body)
        a = try await admin.send(.GET, "/admin/api/reports/quota?from=2028-01-01&to=2028-12-31", headers: asAdmin)
        XCTAssertEqual(a.status, 200, a.body)
        await data.close()
        await admin.close()
    }

    /// More reports than the gate admits: 503 with Retry-After, not a growing queue.
    func testReportsBeyondTheGateAreRefusedWith503() async throws {
        let h = try await AdminHarness.start()
        defer { Task { await h.stop() } }
        let gate = try XCTUnwrap(h.gateway.ledger?.reportGate)
        var held = 0
        while gate.tryEnter() { held += 1 }
        XCTAssertEqual(held, gate.limit)
        let admin = try await h.admin()
        let data = try await h.data()
        var a = try await admin.send(.GET, "/admin/api/reports/quota", headers: [("authorization", "Bearer \(h.adminKey)")])
        XCTAssertEqual(a.status, 503, a.body)
        XCTAssertEqual(a.errorCode, "reports_busy", a.body)
        XCTAssertNotNil(a.headers.first(name: "retry-after"))
        a = try await data.send(.GET, "/v1/usage", headers: [("authorization", "Bearer \(AdminHarness.supportKey)")])
        XCTAssertEqual(a.status, 503, a.body)
        XCTAssertEqual(a.errorCode, "reports_busy", a.body)
        for _ in 0..<held { gate.leave() }
        a = try await admin.send(.GET, "/admin/api/reports/quota", headers: [("authorization", "Bearer \(h.adminKey)")])
        XCTAssertEqual(a.status, 200, a.body)
        a = try await data.send(.GET, "/v1/usage", headers: [("authorization", "Bearer \(AdminHarness.supportKey)")])
        XCTAssertEqual(a.status, 200, a.body)
        await admin.close()
        await data.close()
    }
}
