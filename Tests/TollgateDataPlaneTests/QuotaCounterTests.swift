import TollgateCore
import XCTest

@testable import TollgateDataPlane

/// The quota counter packs a window tag and a 40-bit amount into one atomic word: amounts
/// saturate, so no reservation or settlement can wrap it.
final class QuotaCounterTests: XCTestCase {
    func testAReservationNearTwoToTheFortyDoesNotWrapTheCounter() {
        let counter = QuotaCounter()
        XCTAssertTrue(counter.reserve(window: 7, amount: 100, limit: 1_000_000).admitted)
        // The crafted reservation: just under 2^40. It used to wrap the counter to a small number.
        XCTAssertTrue(counter.reserve(window: 7, amount: (1 << 40) - 50, limit: 1_000_000).admitted)
        XCTAssertEqual(counter.used(window: 7), QuotaAmount.max, "saturated, not wrapped")
        XCTAssertFalse(counter.reserve(window: 7, amount: 1, limit: 1_000_000).admitted, "the department is over its limit")
        counter.adjust(window: 7, by: Int.max)
        XCTAssertEqual(counter.used(window: 7), QuotaAmount.max)
    }

    func testSettlementsNeverGoBelowZero() {
        let counter = QuotaCounter()
        _ = counter.reserve(window: 1, amount: 10, limit: 100)
        counter.adjust(window: 1, by: -1_000)
        XCTAssertEqual(counter.used(window: 1), 0)
        counter.adjust(window: 1, by: Int.min)
        XCTAssertEqual(counter.used(window: 1), 0)
        counter.seed(window: 1, amount: -5)
        XCTAssertEqual(counter.used(window: 1), 0)
        counter.seed(window: 1, amount: Int.max)
        XCTAssertEqual(counter.used(window: 1), QuotaAmount.max)
    }
}
