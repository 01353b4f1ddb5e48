import TollgateCore
import XCTest

/// The health state machine, driven by a fake clock (plain nanosecond values).
final class InstanceHealthTests: XCTestCase {
    let second: UInt64 = 1_000_000_000
    func settings(maxFails: Int = 3, failTimeout: UInt64 = 30) -> InstanceHealth.Settings {
        .init(maxFails: maxFails, failTimeoutNanos: failTimeout * second, unhealthyThreshold: 2, healthyThreshold: 2)
    }

    func testMaxFailsWithinFailTimeoutEjectsForFailTimeout() {
        var h = InstanceHealth(settings: settings())
        let t0 = 100 * second
        XCTAssertEqual(h.recordFailure(at: t0), .none)
        XCTAssertEqual(h.recordFailure(at: t0 + 1 * second), .none)
        XCTAssertTrue(h.isAvailable(at: t0 + 2 * second))
        XCTAssertEqual(h.recordFailure(at: t0 + 2 * second), .ejected(until: t0 + 32 * second))
        XCTAssertFalse(h.isAvailable(at: t0 + 2 * second))
        XCTAssertFalse(h.isAvailable(at: t0 + 31 * second))
        XCTAssertTrue(h.isAvailable(at: t0 + 32 * second))
        XCTAssertEqual(h.ejections, 1)
    }

    func testFailuresSpreadBeyondTheWindowDoNotEject() {
        var h = InstanceHealth(settings: settings())
        var t = 100 * second
        for _ in 0..<10 {
            XCTAssertEqual(h.recordFailure(at: t), .none)
            t += 16 * second  // only two failures ever inside 30 s
        }
        XCTAssertTrue(h.isAvailable(at: t))
    }

    func testFailuresWhileEjectedAreIgnored() {
        var h = InstanceHealth(settings: settings(maxFails: 1))
        XCTAssertEqual(h.recordFailure(at: 0), .ejected(until: 30 * second))
        XCTAssertEqual(h.recordFailure(at: 10 * second), .none)
        XCTAssertEqual(h.ejections, 1)
    }

    func testProbationReejectsOnFirstFailure() {
        var h = InstanceHealth(settings: settings())
        for i in 0..<3 { _ = h.recordFailure(at: UInt64(i) * second) }
        XCTAssertFalse(h.isAvailable(at: 10 * second))
        // Back after 30 s; one failure within the next 30 s ejects it again.
        XCTAssertTrue(h.isAvailable(at: 33 * second))
        XCTAssertEqual(h.recordFailure(at: 40 * second), .ejected(until: 70 * second))
        XCTAssertEqual(h.ejections, 2)
    }

    func testMaxFailsZeroDisablesPassiveEjection() {
        var h = InstanceHealth(settings: settings(maxFails: 0))
        for i in 0..<10 { XCTAssertEqual(h.recordFailure(at: UInt64(i)), .none) }
        XCTAssertTrue(h.isAvailable(at: 10))
    }

    func testProbesFlipOnlyAfterConsecutiveResults() {
        var h = InstanceHealth(settings: settings())
        XCTAssertEqual(h.recordProbe(success: false, at: 1), .none)
        XCTAssertEqual(h.recordProbe(success: true, at: 2), .none)  // streak broken
        XCTAssertEqual(h.recordProbe(success: false, at: 3), .none)
        XCTAssertTrue(h.isAvailable(at: 3))
        XCTAssertEqual(h.recordProbe(success: false, at: 4), .markedDown)
        XCTAssertFalse(h.isAvailable(at: 4))
        XCTAssertEqual(h.recordProbe(success: false, at: 5), .none)
        XCTAssertEqual(h.recordProbe(success: true, at: 6), .none)
        XCTAssertEqual(h.recordProbe(success: true, at: 7), .markedUp)
        XCTAssertTrue(h.isAvailable(at: 7))
    }

    func testProbeRecoveryEndsAnEjection() {
        var h = InstanceHealth(settings: settings(maxFails: 1))
        _ = h.recordProbe(success: false, at: 0)
        _ = h.recordProbe(success: false, at: 1)
        _ = h.recordFailure(at: 2)
        _ = h.recordProbe(success: true, at: 3)
        XCTAssertEqual(h.recordProbe(success: true, at: 4), .markedUp)
        XCTAssertTrue(h.isAvailable(at: 5), "the probe showed it alive: the ejection ends")
    }
}
