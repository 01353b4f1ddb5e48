import Foundation
import NIOCore
import NIOHTTP1
import TollgateServer
import TollgateTestSupport
import XCTest

/// README, "Admin API": `GET /admin/api/reports/quota[?period=2026-11 | ?from=…&to=…]` — every
/// department's report for a calendar month (default: the current one), or for the days from
/// `from` to `to`, both included; the answer names its half-open range.
final class QuotaReportPeriodTests: XCTestCase {
    func testTheReportCoversTheMonthOrTheDaysAskedFor() async throws {
        let h = try await AdminHarness.start()
        let data = try await h.data()
        let admin = try await h.admin()
        for _ in 0..<2 {
            let a = try await data.chat(key: AdminHarness.supportKey)
            XCTAssertEqual(a.status, 200, a.body)
        }
        await h.flushLedger()

        // The harness counts in UTC (no quotas.time_zone).
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let now = Date()
        let today = calendar.startOfDay(for: now)
        let monthStart = calendar.date(from: calendar.dateComponents([.year, .month], from: now))!
        func day(_ date: Date) -> String {
            let c = calendar.dateComponents([.year, .month, .day], from: date)
            return String(format: "%04d-%02d-%02d", c.year!, c.month!, c.day!)
        }
        func month(_ date: Date) -> String { String(day(date).prefix(7)) }
        func iso(_ date: Date) -> String {
            let f = ISO8601DateFormatter()
            f.timeZone = TimeZone(identifier: "UTC")!
            return f.string(from: date)
        }
        let lastMonth = calendar.date(byAdding: .month, value: -1, to: monthStart)!
        let nextMonth = calendar.date(byAdding: .month, value: 1, to: monthStart)!
        let tomorrow = calendar.date(byAdding: .day, value: 1, to: today)!
        let yesterday = calendar.date(byAdding: .day, value: -1, to: today)!

        let cases: [(query: String, from: Date, to: Date, requests: Int)] = [
            ("", monthStart, nextMonth, 2),                                    // default: this month
            ("?period=\(month(now))", monthStart, nextMonth, 2),
            ("?period=\(month(lastMonth))", lastMonth, monthStart, 0),
            ("?from=\(day(today))&to=\(day(today))", today, tomorrow, 2),      // both days included
            ("?from=\(day(yesterday))&to=\(day(yesterday))", yesterday, today, 0),
        ]
        for c in cases {
            let a = try await admin.send(.GET, "/admin/api/reports/quota\(c.query)", headers: [("authorization", "Bearer \(h.adminKey)")])
            XCTAssertEqual(a.status, 200, "\(c.query): \(a.body)")
            XCTAssertEqual(a.json?["from"] as? String, iso(c.from), c.query)
            XCTAssertEqual(a.json?["to"] as? String, iso(c.to), c.query)
            let rows = try XCTUnwrap(a.json?["data"] as? [[String: Any]], a.body)
            let support = try XCTUnwrap(rows.first { $0["department"] as? String == "support" }, a.body)
            XCTAssertEqual(support["requests"] as? Int, c.requests, "\(c.query): \(a.body)")
        }
        await data.close()
        await admin.close()
        await h.stop()
    }
}
