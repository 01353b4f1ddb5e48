import NIOCore
@testable import TollgateRedis
import XCTest

final class ReconnectBackoffTests: XCTestCase {
    func testDoublesUpToTheMaximum() {
        var backoff = ReconnectBackoff(maximum: .milliseconds(500))
        let delays = (0..<7).map { _ in backoff.nextDelay(random: { 1 }).nanoseconds / 1_000_000 }
        XCTAssertEqual(delays, [50, 100, 200, 400, 500, 500, 500])
    }

    func testJitterKeepsTheUpperHalf() {
        var backoff = ReconnectBackoff(maximum: .seconds(5))
        XCTAssertEqual(backoff.nextDelay(random: { 0 }), .milliseconds(25))
        XCTAssertEqual(backoff.nextDelay(random: { 0.5 }), .milliseconds(75))
        for _ in 0..<100 {
            let delay = backoff.nextDelay()
            XCTAssertGreaterThanOrEqual(delay, .milliseconds(0))
            XCTAssertLessThanOrEqual(delay, .seconds(5))
        }
        XCTAssertGreaterThanOrEqual(backoff.nextDelay(), .milliseconds(2500))
    }

    func testResetStartsOver() {
        var backoff = ReconnectBackoff(maximum: .seconds(5))
        for _ in 0..<1000 { _ = backoff.nextDelay() }
        backoff.reset()
        XCTAssertEqual(backoff.nextDelay(random: { 1 }), .milliseconds(50))
    }
}
