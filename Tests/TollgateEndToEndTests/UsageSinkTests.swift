import Foundation
import Logging
import NIOConcurrencyHelpers
import TollgateCore
@testable import TollgateDataPlane
import TollgateLedger
import TollgateServer
import XCTest

/// The hand-over of usage records from the event loops to the ledger's writer, and to the
/// fleet's rollups that watch it, over a real ledger file.
final class UsageSinkTests: XCTestCase {
    /// A gateway runs for months: what each hand-over costs must not grow with how many came
    /// before. Reading the observer out of its lock wrapped it in two more reabstraction thunks
    /// each time (the lock's inout access writes the closure back), so every batch called through
    /// all the thunks of the batches before it: CPU growing with uptime, then a stack overflow
    /// (at 25,000 requests/s the observer's call was 200 frames deeper each second).
    func testTheObserversCallDoesNotDeepenWithEachBatch() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-sink-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let ledger = try Ledger(settings: LedgerSettings(databasePath: directory.appendingPathComponent("ledger.sqlite").path,
                                                         migrationsDirectory: repository.appendingPathComponent("migrations").path,
                                                         replica: "test"), logger: logger)
        let depths = NIOLockedValueBox<[Int]>([])
        ledger.sink.observe { records in
            XCTAssertEqual(records.count, 1)
            depths.withLockedValue { $0.append(Thread.callStackReturnAddresses.count) }
        }
        for i in 0..<500 {
            let record = UsageRecord(timeMs: 1_000 + Int64(i), requestID: "r\(i)", department: "engineering", keyPrefix: nil,
                                     model: "m", endpoint: "chat", instance: "i0", status: 200, promptTokens: 1, completionTokens: 1,
                                     latencyMs: 1, ttftMs: nil, cache: .off, stream: false, cacheKey: nil, promptPreview: nil)
            ledger.sink.submit([record], lastUsed: [:])
        }
        await ledger.writer.flush()
        let seen = depths.withLockedValue { $0 }
        XCTAssertEqual(seen.count, 500, "every batch observed")
        XCTAssertEqual(seen.first, seen.last, "the 500th batch is observed at the depth of the first")
        _ = await ledger.close()
    }
}
