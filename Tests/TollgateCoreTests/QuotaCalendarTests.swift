import Foundation
import TollgateCore
import XCTest

final class QuotaCalendarTests: XCTestCase {
    func ms(_ text: String) -> Int64 {
        let f = ISO8601DateFormatter()
        return Int64(f.date(from: text)!.timeIntervalSince1970 * 1000)
    }

    func testWindowsInUTC() {
        var c = QuotaCalendar(timeZone: TimeZone(identifier: "UTC")!)
        let w = c.current(atMs: ms("2026-11-30T23:59:30Z"))
        XCTAssertEqual(w.minuteStart, ms("2026-11-30T23:59:00Z"))
        XCTAssertEqual(w.dayStart, ms("2026-11-30T00:00:00Z"))
        XCTAssertEqual(w.dayEnd, ms("2026-12-01T00:00:00Z"))
        XCTAssertEqual(w.monthStart, ms("2026-11-01T00:00:00Z"))
        XCTAssertEqual(w.monthEnd, ms("2026-12-01T00:00:00Z"))
        let next = c.current(atMs: ms("2026-12-01T00:00:05Z"))
        XCTAssertEqual(next.day, w.day + 1)
        XCTAssertEqual(next.month, w.month + 1)
        XCTAssertEqual(next.minute, w.minute + 1)
    }

    func testDaysAndMonthsFollowTheConfiguredZone() {
        var c = QuotaCalendar(timeZone: TimeZone(identifier: "Asia/Shanghai")!)
        // 2026-11-30T17:00Z is already December 1st in Shanghai (UTC+8).
        let w = c.current(atMs: ms("2026-11-30T17:00:00Z"))
        XCTAssertEqual(w.dayStart, ms("2026-11-30T16:00:00Z"))
        XCTAssertEqual(w.monthStart, ms("2026-11-30T16:00:00Z"))
        XCTAssertEqual(w.monthEnd, ms("2026-12-31T16:00:00Z"))
    }

    func testMinutesMoveWithinACachedDay() {
        var c = QuotaCalendar(timeZone: TimeZone(identifier: "UTC")!)
        let a = c.current(atMs: ms("2026-11-30T10:00:59Z"))
        let b = c.current(atMs: ms("2026-11-30T10:01:00Z"))
        XCTAssertEqual(b.minute, a.minute + 1)
        XCTAssertEqual(b.day, a.day)
        XCTAssertEqual(b.minuteEnd - b.minuteStart, 60_000)
    }

    func testReservationEstimate() {
        XCTAssertEqual(reservationEstimate(promptBytes: 400, maxTokens: 50, defaultMaxTokens: 1024), 150)
        XCTAssertEqual(reservationEstimate(promptBytes: 0, maxTokens: nil, defaultMaxTokens: 1024), 1025)
    }

    func testQuotaConfiguration() throws {
        let c = try ConfigurationLoader.parse(ConfigurationTests.minimal + """

            quotas: {time_zone: Europe/Berlin, default_max_tokens: 256}
            departments:
              - name: d
                quota: {requests_per_minute: 60, tokens_per_minute: 1000, tokens_per_day: 20000, tokens_per_month: 300000}
            """)
        XCTAssertEqual(c.quotas.timeZone.identifier, "Europe/Berlin")
        XCTAssertEqual(c.quotas.defaultMaxTokens, 256)
        XCTAssertEqual(c.departments[0].quota, QuotaLimits(requestsPerMinute: 60, tokensPerMinute: 1000, tokensPerDay: 20000, tokensPerMonth: 300000))
        XCTAssertThrowsError(try ConfigurationLoader.parse(ConfigurationTests.minimal + "\nquotas: {time_zone: Mars/Olympus}\n"))
        XCTAssertThrowsError(try ConfigurationLoader.parse(ConfigurationTests.minimal + "\ndepartments:\n  - name: d\n    quota: {tokens_per_hour: 5}\n"))
    }

    func testACalendarFollowsAChangedZone() {
        var c = QuotaCalendar(timeZone: TimeZone(identifier: "UTC")!)
        let utc = c.current(atMs: ms("2026-11-30T17:00:00Z"), in: TimeZone(identifier: "UTC")!)
        XCTAssertEqual(utc.dayStart, ms("2026-11-30T00:00:00Z"))
        let shanghai = c.current(atMs: ms("2026-11-30T17:00:00Z"), in: TimeZone(identifier: "Asia/Shanghai")!)
        XCTAssertEqual(shanghai.dayStart, ms("2026-11-30T16:00:00Z"))
        XCTAssertEqual(c.timeZone, TimeZone(identifier: "Asia/Shanghai")!)
        XCTAssertEqual(c.current(atMs: ms("2026-11-30T17:00:01Z"), in: TimeZone(identifier: "Asia/Shanghai")!).dayStart,
                       ms("2026-11-30T16:00:00Z"))
    }

    func testTheSystemWallClockIsUnixMilliseconds() {
        let before = Int64(Date().timeIntervalSince1970 * 1000)
        let now = wallClockMs()
        XCTAssertGreaterThanOrEqual(now, before)
        XCTAssertLessThan(now - before, 60_000)
    }
}
