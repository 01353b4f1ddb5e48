import TollgateCore
import XCTest

/// The retry rule without sockets: every interleaving of failures that matters.
final class FailoverTests: XCTestCase {
    let unavailable = GatewayError.upstreamUnavailable("test")

    func testTriesEachInstanceOnceUpToTheLimit() {
        var f = Failover(maxAttempts: 3)
        XCTAssertEqual(f.next(), .pick(excluding: []))
        XCTAssertFalse(f.began(0))
        XCTAssertEqual(f.failed(.connectFailed, error: unavailable), .retry(blame: true))
        XCTAssertEqual(f.next(), .pick(excluding: [0]))
        XCTAssertTrue(f.began(1), "the second try is a retry")
        XCTAssertEqual(f.failed(.timedOut, error: .upstreamTimeout), .retry(blame: true))
        XCTAssertEqual(f.next(), .pick(excluding: [0, 1]))
        f.began(2)
        XCTAssertEqual(f.failed(.switchedProtocols, error: unavailable), .retry(blame: true))
        XCTAssertEqual(f.next(), .giveUp(unavailable), "three tries, then the last error")
    }

    func testOneAttemptMeansNoRetry() {
        var f = Failover(maxAttempts: 1)
        f.began(0)
        XCTAssertEqual(f.failed(.connectFailed, error: unavailable), .retry(blame: true))
        XCTAssertEqual(f.next(), .giveUp(unavailable))
        XCTAssertEqual(Failover(maxAttempts: 0).maxAttempts, 1, "at least one try")
    }

    func testAStalePooledConnectionIsRetriedOnceForFree() {
        var f = Failover(maxAttempts: 2)
        f.began(0)
        XCTAssertEqual(f.failed(.closedBeforeHead(reused: true), error: unavailable), .retry(blame: false))
        XCTAssertEqual(f.attempts, 0, "not counted")
        XCTAssertEqual(f.next(), .pick(excluding: []), "the same instance may be picked again")
        f.began(0)
        // A second stale close is the instance's fault.
        XCTAssertEqual(f.failed(.closedBeforeHead(reused: true), error: unavailable), .retry(blame: true))
        XCTAssertEqual(f.next(), .pick(excluding: [0]))
        f.began(1)
        XCTAssertEqual(f.failed(.closedBeforeHead(reused: false), error: unavailable), .retry(blame: true))
        XCTAssertEqual(f.next(), .giveUp(unavailable))
    }

    func testOverloadedAnswersAreRetriedWhileTriesRemainThenDelivered() {
        var f = Failover(maxAttempts: 2)
        f.began(0)
        XCTAssertEqual(f.answered(status: 503, error: unavailable), .retry(blame: true))
        f.began(1)
        XCTAssertEqual(f.answered(status: 502, error: unavailable), .deliver(blame: true), "the last try's answer goes to the client")
    }

    func testOtherAnswersAreDelivered() {
        for status in [200, 400, 404, 429, 500] {
            var f = Failover(maxAttempts: 3)
            f.began(0)
            XCTAssertEqual(f.answered(status: status, error: unavailable), .deliver(blame: false), "\(status)")
        }
    }
}
