import Foundation
import GRDB
import TollgateCore
import TollgateLedger
import XCTest

/// Numbers that reach the ledger from outside — a key's lifetime from the admin API, token
/// counts an instance reported, a reservation — are bounded: nothing traps, nothing makes
/// SQLite's `sum()` fail, and start-up (quota seeding) never fails on them.
final class LedgerBoundsTests: LedgerTestCase {
    private let now = Date(timeIntervalSince1970: 1_793_491_200)

    func testAKeyLifetimeBeyondTheBoundIsRefusedNotTrapped() throws {
        let store = KeyStore(database: try openLedger())
        // 106751991167 days is just below Int64.max milliseconds: parsing alone does not overflow,
        // adding it to the creation time did (a trap in the control plane).
        XCTAssertEqual(ledgerError(try KeyStore.parseDuration("106751991167d"))?.codeString, "invalid_duration")
        XCTAssertEqual(ledgerError(try KeyStore.parseDuration("99999999999999999999d"))?.codeString, "invalid_duration")
        XCTAssertEqual(ledgerError(try store.create(department: "d", label: nil, expiresIn: .milliseconds(Int64.max), now: now))?.codeString,
                       "invalid_duration")
        XCTAssertEqual(ledgerError(try store.create(department: "d", label: nil, expiresIn: .seconds(Int64.max), now: now))?.codeString,
                       "invalid_duration")
        let message = ledgerError(try KeyStore.parseDuration("36601d"))?.message ?? ""
        XCTAssertTrue(message.contains("at most"), message)
        // The longest allowed lifetime works.
        let longest = try KeyStore.parseDuration("\(KeyStore.maxLifetimeDays)d")
        let created = try store.create(department: "d", label: nil, expiresIn: longest, now: now)
        XCTAssertEqual(created.info.expiresMs, now.unixMsForTest + Int64(KeyStore.maxLifetimeDays) * 86_400_000)
    }

    func testAKeyLabelIsBounded() throws {
        let store = KeyStore(database: try openLedger())
        XCTAssertEqual(ledgerError(try store.create(department: "d", label: String(repeating: "x", count: 201), expiresIn: nil))?.codeString,
                       "invalid_label")
        XCTAssertNoThrow(try store.create(department: "d", label: String(repeating: "x", count: 200), expiresIn: nil))
    }

    func testRecordsAreClampedOnTheWayIn() async throws {
        let ledger = try openLedger()
        var huge = record(now.unixMsForTest, "d", latency: .infinity, prompt: Int.max, completion: Int.max, reserved: Int.max)
        huge.ttftMs = -.infinity
        var nan = record(now.unixMsForTest, "d", latency: .nan, prompt: -5, completion: nil, reserved: Int.min)
        nan.ttftMs = .nan
        await insert([huge, nan], into: ledger)
        let rows = try await DatabaseQueue(path: path("ledger.sqlite")).read { db in
            try Row.fetchAll(db, sql: "SELECT prompt_tokens, completion_tokens, reserved_tokens, latency_ms, ttft_ms FROM usage ORDER BY id")
        }
        XCTAssertEqual(rows.count, 2, "no row is lost to a refused value")
        XCTAssertEqual(rows[0][0] as Int64, UsageRecord.maxTokens)
        XCTAssertEqual(rows[0][1] as Int64, UsageRecord.maxTokens)
        XCTAssertEqual(rows[0][2] as Int64, UsageRecord.maxTokens)
        XCTAssertEqual(rows[0][3] as Double, UsageRecord.maxMilliseconds)
        XCTAssertEqual(rows[0][4] as Double, 0)
        XCTAssertEqual(rows[1][0] as Int64, 0)
        XCTAssertEqual(rows[1][2] as Int64, 0)
        XCTAssertEqual(rows[1][3] as Double, 0)
        XCTAssertEqual(rows[1][4] as Double?, nil)
    }

    /// A ledger written before the clamp, with reservations near 2^63: SQLite's `sum()` fails
    /// with "integer overflow", and `serve` without Redis exited at start. Seeding and reports
    /// must still answer.
    func testSumsSurviveRowsWrittenBeforeTheClamp() async throws {
        let ledger = try openLedger()
        let t = now.unixMsForTest
        let queue = try DatabaseQueue(path: path("ledger.sqlite"))
        try await queue.write { db in
            for i in 0..<3 {
                try db.execute(sql: """
                    INSERT INTO usage (time_ms, request_id, department, endpoint, status, prompt_tokens, completion_tokens,
                                       latency_ms, cache, stream, reserved_tokens)
                    VALUES (?, ?, 'd', 'chat', 200, ?, ?, 1.0, 'miss', 0, ?)
                    """, arguments: [t + Int64(i), "r\(i)", i == 0 ? Int64.max : nil, i == 0 ? Int64.max : nil, i == 0 ? nil : Int64.max - 1])
            }
        }
        let sums = try Reports.tokenSumsByDepartment(database: ledger, since: t - 1000)
        XCTAssertEqual(sums["d"]?.requests, 3)
        XCTAssertEqual(sums["d"]?.tokens, Reports.maxSum)
        let period = ReportPeriod(from: Date(timeIntervalSince1970: Double(t - 1000) / 1000), to: Date(timeIntervalSince1970: Double(t + 1000) / 1000))
        let reports = try Reports.departments(databases: [ledger, ledger], period: period, department: nil)
        XCTAssertEqual(reports.first?.requests, 6)
        XCTAssertLessThanOrEqual(reports.first?.totalTokens ?? .max, Int.max)
    }
}

/// The ledger keeps prompt previews: its files are the owner's only.
final class LedgerFileModeTests: LedgerTestCase {
    private func mode(_ file: String) throws -> Int {
        let attributes = try FileManager.default.attributesOfItem(atPath: file)
        return (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }

    func testANewLedgerAndItsWALAreCreatedOwnerOnly() async throws {
        let old = umask(0o022)
        defer { umask(old) }
        let ledger = try openLedger("sub/dir/ledger.sqlite")
        await insert([record(1_000, "d", preview: "a secret prompt")], into: ledger)
        for suffix in ["", "-wal", "-shm"] {
            let file = path("sub/dir/ledger.sqlite") + suffix
            guard FileManager.default.fileExists(atPath: file) else { continue }
            let actual = try mode(file)
            XCTAssertEqual(actual, 0o600, "\(file) is 0\(String(actual, radix: 8))")
        }
        try ledger.close()
    }
}

extension Date {
    var unixMsForTest: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
}
