import Foundation
import NIOCore
import TollgateCore
import XCTest

@testable import TollgateDataPlane

/// A reservation passes every meter of its department or none: a refusal by a later meter gives
/// back what the earlier ones took.
final class QuotaBookTests: XCTestCase {
    func book(_ limits: QuotaLimits) -> QuotaBook {
        var config = GatewayConfiguration()
        config.pools = [PoolConfiguration(name: "p", models: ["m"], instances: [
            InstanceConfiguration(name: "a", url: UpstreamURL(host: "127.0.0.1", port: 1)),
        ])]
        config.departments = [DepartmentConfiguration(name: "d", keys: [], quota: limits)]
        return QuotaBook(table: RoutingTable(configuration: config), previous: nil)
    }

    func testARefusalGivesBackWhatTheEarlierMetersTook() {
        let quotas = book(QuotaLimits(requestsPerMinute: 10, tokensPerMinute: 100, tokensPerDay: 1_000))
        var calendar = QuotaCalendar(timeZone: TimeZone(identifier: "UTC")!)
        let nowMs: Int64 = 1_764_460_800_000
        let now = calendar.current(atMs: nowMs)
        // A reservation is admitted while the meter is below its limit (the one that crosses it too).
        for _ in 0..<2 {
            guard case .admitted = quotas.admit(department: 0, tokens: 60, at: now, nowMs: nowMs) else { return XCTFail("below the limit") }
        }
        guard case .rejected(let meter, _, _, _, _) = quotas.admit(department: 0, tokens: 60, at: now, nowMs: nowMs) else {
            return XCTFail("the minute's 100 tokens are spent")
        }
        XCTAssertEqual(meter, .tokensPerMinute)
        let used = quotas.usage(department: 0, at: now)
        XCTAssertEqual(used[.requestsPerMinute], 2, "the refused request's count was given back")
        XCTAssertEqual(used[.tokensPerMinute], 120)
        XCTAssertEqual(used[.tokensPerDay], 120, "the later meter took nothing")
        // Refused by the last meter: both earlier ones are given back.
        let daily = book(QuotaLimits(requestsPerMinute: 10, tokensPerMinute: 1_000, tokensPerDay: 100))
        _ = daily.admit(department: 0, tokens: 60, at: now, nowMs: nowMs)
        _ = daily.admit(department: 0, tokens: 60, at: now, nowMs: nowMs)
        guard case .rejected(.tokensPerDay, _, _, _, _) = daily.admit(department: 0, tokens: 60, at: now, nowMs: nowMs) else {
            return XCTFail("the day's 100 tokens are spent")
        }
        XCTAssertEqual(daily.usage(department: 0, at: now)[.requestsPerMinute], 2)
        XCTAssertEqual(daily.usage(department: 0, at: now)[.tokensPerMinute], 120)
    }

    /// A forwarded answer's quota headers are written as bytes; a local answer's (a 429, a cache
    /// hit) as pairs. Both say the same, to the millisecond of the reset's zero padding.
    func testTheQuotaHeadersWrittenAsBytesAreThePairsOfLocalAnswers() {
        let quotas = book(QuotaLimits(requestsPerMinute: 10, tokensPerMinute: 100, tokensPerDay: 1_000, tokensPerMonth: 5_000))
        var calendar = QuotaCalendar(timeZone: TimeZone(identifier: "UTC")!)
        // Resets 0.059 s, 5.005 s, 59.999 s and 0.000 s before the minute's end: every padding.
        for nowMs: Int64 in [1_764_460_859_941, 1_764_460_854_995, 1_764_460_800_001, 1_764_460_860_000] {
            let now = calendar.current(atMs: nowMs)
            _ = quotas.admit(department: 0, tokens: 7, at: now, nowMs: nowMs)
            var buffer = ByteBuffer()
            quotas.writeHeaders(into: &buffer, department: 0, at: now, nowMs: nowMs)
            let pairs = quotas.headers(department: 0, at: now, nowMs: nowMs)
            XCTAssertEqual(pairs.count, 12, "three headers for each of the four limited meters")
            XCTAssertEqual(String(buffer: buffer), pairs.map { "\($0.0): \($0.1)\r\n" }.joined(), "at \(nowMs)")
        }
        XCTAssertEqual(quotas.headers(department: 0, at: calendar.current(atMs: 1_764_460_859_941), nowMs: 1_764_460_859_941)
            .first { $0.0 == "x-ratelimit-reset-requests" }?.1, "0.059s")
    }

    func testDecimalsAreWrittenWithoutAString() {
        for value in [0, 7, 9, 10, 99, 100, 12_345, -1, -10, Int.max, Int.min] {
            var buffer = ByteBuffer()
            buffer.writeDecimal(value)
            XCTAssertEqual(String(buffer: buffer), String(value))
        }
    }
}
