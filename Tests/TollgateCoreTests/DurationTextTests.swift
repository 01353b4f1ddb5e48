import TollgateCore
import XCTest

/// `DurationText`: one grammar (number, unit suffix) with the configuration's and the key
/// lifetimes' units.
final class DurationTextTests: XCTestCase {
    func testSplitTakesTheFirstMatchingSuffix() {
        let ms = DurationText.split(" 250ms ", units: DurationText.configurationUnits)
        XCTAssertEqual(ms.number, "250")
        XCTAssertEqual(ms.unit?.suffix, "ms")
        let bare = DurationText.split("1.5", units: DurationText.configurationUnits)
        XCTAssertEqual(bare.number, "1.5")
        XCTAssertNil(bare.unit)
        let days = DurationText.split("90d", units: DurationText.lifetimeUnits)
        XCTAssertEqual(days.number, "90")
        XCTAssertEqual(days.unit?.nanoseconds, 86_400_000_000_000)
        XCTAssertNil(DurationText.split("90d", units: DurationText.configurationUnits).unit, "no day unit in configuration")
    }

    func testConfigurationDurations() {
        XCTAssertEqual(parseDuration("250ms"), .milliseconds(250))
        XCTAssertEqual(parseDuration("1.5s"), .milliseconds(1500))
        XCTAssertEqual(parseDuration("5m"), .seconds(300))
        XCTAssertEqual(parseDuration("1h"), .seconds(3600))
        XCTAssertEqual(parseDuration("30"), .seconds(30))
        XCTAssertNil(parseDuration("2w"))
        XCTAssertNil(parseDuration("-1s"))
    }
}
