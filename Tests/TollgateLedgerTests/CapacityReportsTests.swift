import Foundation
import TollgateCore
import TollgateLedger
import XCTest

/// The capacity panel's ledger figures: per instance (or model, for shed requests), and GPU
/// time per department.
final class CapacityReportsTests: LedgerTestCase {
    func testCapacityRowsAndGPUTime() async throws {
        let ledger = try openLedger()
        var waited = record(1_000, "cs", latency: 1_500, instance: "qwen-0")
        waited.queueMs = 500
        var timeout = record(1_100, "cs", latency: 60_000, status: 504, instance: "qwen-0")
        timeout.errorCode = "upstream_timeout"
        var shed = record(1_200, "batch", latency: 10_000, status: 503, cache: .off, instance: nil)
        shed.errorCode = "queue_timeout"
        shed.queueMs = 10_000
        let hit = record(1_300, "cs", latency: 2, cache: .hit, instance: nil)
        let refused = record(1_400, "cs", latency: 1, status: 400, cache: .off, instance: nil)
        let outside = record(9_000, "cs", latency: 1, instance: "qwen-0")
        await insert([waited, timeout, shed, hit, refused, outside], into: ledger)

        let rows = try Reports.capacityRows(database: ledger, from: 0, to: 5_000).sorted { ($0.instance ?? "") < ($1.instance ?? "") }
        XCTAssertEqual(rows.count, 2, "the refused request and the hit used no instance and were not shed")
        XCTAssertEqual(rows[0], CapacityRow(instance: nil, model: "qwen2.5-0.5b-instruct", requests: 1, latencySumMs: 10_000, busySumMs: 0,
                                            waited: 1, waitSumMs: 10_000, upstreamTimeouts: 0, shed: 1))
        XCTAssertEqual(rows[1], CapacityRow(instance: "qwen-0", model: "qwen2.5-0.5b-instruct", requests: 2, latencySumMs: 61_500,
                                            busySumMs: 61_000, waited: 1, waitSumMs: 500, upstreamTimeouts: 1, shed: 0))

        let gpu = try Reports.gpuTime(database: ledger, from: 0, to: 5_000)
        XCTAssertEqual(gpu.map(\.department), ["batch", "cs"])
        XCTAssertEqual(gpu[1].usedSeconds, 61, accuracy: 0.001)
        XCTAssertEqual(gpu[1].savedByCacheSeconds, 30.5, accuracy: 0.001, "one hit × the mean busy time of its misses")
        XCTAssertEqual(gpu[0].usedSeconds, 0)
    }
}
