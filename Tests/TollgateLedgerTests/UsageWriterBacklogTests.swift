import Foundation
import GRDB
import TollgateLedger
import XCTest

/// The ledger writer when SQLite cannot write: its backlog is bounded and says so
/// (`isSaturated`, for the data plane to refuse new requests), and shutdown has a deadline.
///
/// The failure is real: another connection holds the database's write lock (`BEGIN
/// IMMEDIATE`), so every commit of the writer fails with SQLITE_BUSY after the busy timeout —
/// as when another process keeps the file locked. No mock.
final class UsageWriterBacklogTests: LedgerTestCase {
    /// Takes the write lock of the ledger file on a connection of its own until `release()`.
    final class WriteLock: @unchecked Sendable {
        let queue: DatabaseQueue
        private let released = DispatchSemaphore(value: 0)
        private let done = DispatchSemaphore(value: 0)

        init(path: String) throws {
            queue = try DatabaseQueue(path: path)
            let held = DispatchSemaphore(value: 0)
            let queue = self.queue, released = self.released, done = self.done
            Thread {
                try? queue.inDatabase { db in
                    try db.execute(sql: "BEGIN IMMEDIATE")
                    held.signal()
                    released.wait()
                    try db.execute(sql: "ROLLBACK")
                }
                done.signal()
            }.start()
            held.wait()
        }

        func release() {
            released.signal()
            done.wait()
        }
    }

    func testTheBacklogIsBoundedAndSaysWhenItIsFull() async throws {
        let ledger = try openLedger()
        let writer = UsageWriter(database: ledger, interval: .milliseconds(10), maxBacklog: 100)
        XCTAssertFalse(writer.isSaturated)
        XCTAssertEqual(writer.maxBacklog, 100)
        let lock = try WriteLock(path: path("ledger.sqlite"))
        writer.submit((0..<60).map { record(1_000 + Int64($0), "d") })
        XCTAssertFalse(writer.isSaturated)
        writer.submit((0..<60).map { record(2_000 + Int64($0), "d") })
        XCTAssertTrue(writer.isSaturated, "120 rows wait for a ledger that takes 100")
        // Rows of requests already in flight are still taken (nothing admitted is lost)…
        writer.submit((0..<60).map { record(3_000 + Int64($0), "d") })
        XCTAssertEqual(writer.queueDepth, 180)
        // …up to the hard ceiling (twice the backlog), past which rows are dropped and counted.
        writer.submit((0..<60).map { record(4_000 + Int64($0), "d") })
        XCTAssertEqual(writer.queueDepth, 200)
        XCTAssertEqual(writer.droppedRows, 40)
        lock.release()
        await writer.flush()
        XCTAssertFalse(writer.isSaturated)
        XCTAssertEqual(writer.committedRows, 200)
        await writer.close()
    }

    /// SIGTERM with a ledger that cannot be written used to wait forever; now the close
    /// gives up at its deadline and says how many rows were not written.
    func testCloseGivesUpAtItsDeadline() async throws {
        let ledger = try openLedger()
        let writer = UsageWriter(database: ledger, interval: .milliseconds(10))
        let lock = try WriteLock(path: path("ledger.sqlite"))
        writer.submit((0..<25).map { record(1_000 + Int64($0), "d") })
        let started = ContinuousClock.now
        let unwritten = await writer.close(timeout: .milliseconds(500))
        let waited = ContinuousClock.now - started
        XCTAssertEqual(unwritten, 25)
        XCTAssertLessThan(waited, .seconds(3), "close returned at its deadline, not after the busy timeout")
        XCTAssertGreaterThanOrEqual(waited, .milliseconds(450))
        lock.release()
        // A close with time to spare writes everything, as before.
        let second = UsageWriter(database: ledger)
        second.submit((0..<5).map { record(5_000 + Int64($0), "d") })
        let none = await second.close(timeout: .seconds(30))
        XCTAssertEqual(none, 0)
    }
}
