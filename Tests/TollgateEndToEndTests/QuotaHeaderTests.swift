import Foundation
import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateDataPlane
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// README, "Quotas": forwarded answers and 429s carry `x-ratelimit-limit-*`,
/// `x-ratelimit-remaining-*` and `x-ratelimit-reset-*` for each limited meter (`requests`,
/// `tokens`, `tokens-day`, `tokens-month`); a 429 has `Retry-After` until the window ends.
final class QuotaHeaderTests: XCTestCase {
    static let utc = TimeZone(identifier: "UTC")!

    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// Keeps a test's requests inside one calendar minute (its windows' ends must not move).
    static func avoidMinuteBoundary() async throws {
        let intoMinute = nowMs() % 60_000
        if intoMinute > 55_000 { try await Task.sleep(for: .milliseconds(60_000 - intoMinute + 100)) }
    }

    static func windows(atMs ms: Int64) -> QuotaCalendar.Current {
        var calendar = QuotaCalendar(timeZone: utc)
        return calendar.current(atMs: ms)
    }

    /// `12.345s` → 12,345 ms.
    static func resetMs(_ text: String?) -> Int64? {
        guard let text, text.hasSuffix("s") else { return nil }
        let parts = text.dropLast().split(separator: ".")
        guard parts.count == 2, parts[1].count == 3, let s = Int64(parts[0]), let ms = Int64(parts[1]) else { return nil }
        return s * 1000 + ms
    }

    func testAForwardedAnswerCarriesLimitRemainingAndResetForEveryLimitedMeter() async throws {
        try await Self.avoidMinuteBoundary()
        let limits = QuotaLimits(requestsPerMinute: 100, tokensPerMinute: 100_000, tokensPerDay: 1_000_000, tokensPerMonth: 10_000_000)
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.departments[1].quota = limits
        }
        let client = try await gw.client()
        let before = Self.nowMs()
        let answer = try await client.chat(key: TestKeys.engineering, content: "hello", extra: #","max_tokens":4"#)
        let after = Self.nowMs()
        XCTAssertEqual(answer.status, 200, answer.body)
        // What admission reserved, and what the headers (written with the answer's head) count.
        let reserved = reservationEstimate(promptBytes: #"[{"role":"user","content":"hello"}]"#.utf8.count, maxTokens: 4,
                                           defaultMaxTokens: gw.configuration.quotas.defaultMaxTokens)
        let w = Self.windows(atMs: before)
        let expected: [(meter: String, limit: Int, used: Int, end: Int64)] = [
            ("requests", 100, 1, w.minuteEnd), ("tokens", 100_000, reserved, w.minuteEnd),
            ("tokens-day", 1_000_000, reserved, w.dayEnd), ("tokens-month", 10_000_000, reserved, w.monthEnd),
        ]
        for e in expected {
            XCTAssertEqual(answer.headers.first(name: "x-ratelimit-limit-\(e.meter)"), String(e.limit), e.meter)
            XCTAssertEqual(answer.headers.first(name: "x-ratelimit-remaining-\(e.meter)"), String(e.limit - e.used), e.meter)
            let text = answer.headers.first(name: "x-ratelimit-reset-\(e.meter)")
            let reset = try XCTUnwrap(Self.resetMs(text), "x-ratelimit-reset-\(e.meter): \(text ?? "missing")")
            // The time left in the meter's own window, as the gateway saw it between our send and receive.
            XCTAssertTrue((e.end - after)...(e.end - before) ~= reset, "\(e.meter): \(reset) ms, window ends in \(e.end - after)…\(e.end - before) ms")
        }
        await client.close()
        await gw.stop()
    }

    /// Refused by the minute's, the day's or the month's token meter: `Retry-After` is the
    /// seconds until that window ends (rounded up), and the 429 carries the headers too.
    func testRetryAfterIsTheSecondsUntilTheRefusingWindowEnds() async throws {
        try await Self.avoidMinuteBoundary()
        let keys = ["minute": "tg-test-minute", "day": "tg-test-day", "month": "tg-test-month"]
        let gw = try await GatewayFixture.start(instances: 1) { config in
            // A limit is reached at used >= limit: the first request (20 tokens at least) uses it up.
            config.departments.append(DepartmentConfiguration(name: "minute", keys: [KeyEntry(sha256: KeyDigest.hex(of: keys["minute"]!), label: "t")],
                                                              quota: QuotaLimits(tokensPerMinute: 10)))
            config.departments.append(DepartmentConfiguration(name: "day", keys: [KeyEntry(sha256: KeyDigest.hex(of: keys["day"]!), label: "t")],
                                                              quota: QuotaLimits(tokensPerDay: 10)))
            config.departments.append(DepartmentConfiguration(name: "month", keys: [KeyEntry(sha256: KeyDigest.hex(of: keys["month"]!), label: "t")],
                                                              quota: QuotaLimits(tokensPerMonth: 10)))
        }
        let client = try await gw.client()
        for (window, suffix) in [("minute", "tokens"), ("day", "tokens-day"), ("month", "tokens-month")] {
            let key = keys[window]!
            let first = try await client.chat(key: key, extra: #","max_tokens":20"#)
            XCTAssertEqual(first.status, 200, first.body)
            let before = Self.nowMs()
            let refused = try await client.chat(key: key, extra: #","max_tokens":20"#)
            let after = Self.nowMs()
            XCTAssertEqual(refused.status, 429, refused.body)
            XCTAssertEqual(refused.errorCode, "rate_limit_exceeded")
            XCTAssertEqual(refused.errorType, "tokens")
            let w = Self.windows(atMs: before)
            let end = window == "minute" ? w.minuteEnd : window == "day" ? w.dayEnd : w.monthEnd
            let seconds = try XCTUnwrap(refused.headers.first(name: "retry-after").flatMap { Int64($0) }, window)
            let range = max(1, (end - after + 999) / 1000)...max(1, (end - before + 999) / 1000)
            XCTAssertTrue(range ~= seconds, "\(window): Retry-After \(seconds), window ends in \(range) s")
            XCTAssertEqual(refused.headers.first(name: "x-ratelimit-limit-\(suffix)"), "10", window)
            XCTAssertEqual(refused.headers.first(name: "x-ratelimit-remaining-\(suffix)"), "0", window)
            let reset = try XCTUnwrap(Self.resetMs(refused.headers.first(name: "x-ratelimit-reset-\(suffix)")), window)
            XCTAssertTrue((end - after)...(end - before) ~= reset, "\(window): reset \(reset) ms")
        }
        await client.close()
        await gw.stop()
    }
}
