import Foundation
import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateDataPlane
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// README, "Quotas": a request reserves one request and its possible cost against every
/// limited meter, all or none; when it ends the reservation is replaced by the instance's
/// reported usage, and a request no instance answered costs nothing.
final class QuotaAdmissionTests: XCTestCase {
    private func usage(_ gw: GatewayFixture, department: Int) -> [QuotaMeter: Int] {
        let quotas = gw.dataPlane.state.quotas
        return quotas.usage(department: department, at: QuotaHeaderTests.windows(atMs: QuotaHeaderTests.nowMs()))
    }

    /// The month's meter (checked last) refuses: the request, the minute's and the day's
    /// tokens it had reserved before are given back.
    func testARequestRefusedByOneMeterLeavesTheOthersUntouched() async throws {
        try await QuotaHeaderTests.avoidMinuteBoundary()
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.departments[1].quota = QuotaLimits(requestsPerMinute: 100, tokensPerMinute: 1_000_000,
                                                      tokensPerDay: 1_000_000, tokensPerMonth: 10)
        }
        let client = try await gw.client()
        let first = try await client.chat(key: TestKeys.engineering, extra: #","max_tokens":20"#)
        XCTAssertEqual(first.status, 200, first.body)
        // Settled to what the instance reported (the settlement follows the answer's last write).
        let generated = gw.instances[0].stats.promptTokens + gw.instances[0].stats.completionTokens
        let settled = await gw.eventually { self.usage(gw, department: 1)[.tokensPerMinute] == generated }
        XCTAssertTrue(settled)
        let before = usage(gw, department: 1)
        XCTAssertEqual(before[.requestsPerMinute], 1)

        for _ in 0..<3 {
            let refused = try await client.chat(key: TestKeys.engineering, extra: #","max_tokens":20"#)
            XCTAssertEqual(refused.status, 429, refused.body)
            XCTAssertEqual(refused.errorType, "tokens")
            XCTAssertEqual(refused.headers.first(name: "x-ratelimit-remaining-requests"), "99", "the refused request is not counted")
            XCTAssertEqual(refused.headers.first(name: "x-ratelimit-remaining-tokens"), String(1_000_000 - generated))
        }
        XCTAssertEqual(usage(gw, department: 1), before, "every meter as before the refusals")
        await client.close()
        await gw.stop()
    }

    /// Every try failed (502) or timed out (504): nothing was generated, no token is charged, and
    /// the request does not count against `requests_per_minute` either.
    func testARequestNoInstanceAnsweredCostsNothing() async throws {
        try await QuotaHeaderTests.avoidMinuteBoundary()
        let gw = try await GatewayFixture.start(instances: 2, gpus: 2) { config in
            config.health.probePath = ""
            config.health.maxFails = 0
            config.timeouts.perTry = .milliseconds(200)
            config.departments[1].quota = QuotaLimits(requestsPerMinute: 100, tokensPerMinute: 1_000_000, tokensPerDay: 1_000_000,
                                                      tokensPerMonth: 1_000_000)
        }
        var hung = SimulatorConfiguration()
        hung.hang = true
        gw.instances[0].update(hung)
        try await gw.instances[1].stop()
        let client = try await gw.client()
        let statuses = [
            try await client.chat(key: TestKeys.engineering, extra: #","max_tokens":500"#).status,
            try await client.chat(key: TestKeys.engineering, extra: #","max_tokens":500"#).status,
        ]
        // One instance refuses connections, the other hangs past per_try: 502 or 504 by the last try.
        XCTAssertTrue(statuses.allSatisfy { [502, 504].contains($0) }, "\(statuses)")
        let nothing = await gw.eventually(timeout: .seconds(2)) {
            let u = self.usage(gw, department: 1)
            return u[.tokensPerMinute] == 0 && u[.tokensPerDay] == 0 && u[.tokensPerMonth] == 0 && u[.requestsPerMinute] == 0
        }
        XCTAssertTrue(nothing, "tokens charged: \(usage(gw, department: 1))")
        await client.close()
        await gw.stop()
    }
}
