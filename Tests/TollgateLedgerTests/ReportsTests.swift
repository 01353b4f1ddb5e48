import Foundation
import TollgateCore
import TollgateLedger
import XCTest

final class ReportsTests: LedgerTestCase {
    /// November 2026 in UTC.
    private let november = try! ReportPeriod.month("2026-11", timeZone: TimeZone(identifier: "UTC")!)
    private var t0: Int64 { november.fromMs }

    /// Engineering: 20 requests with latencies 1…20 ms; 6 hits, 10 misses, 4 bypass;
    /// statuses 200 except two 500s and one 429; tokens 10 + 5 each; hits have no instance.
    /// Analytics: 3 requests. Outside November: 2 rows that must not count.
    private func knownRecords() -> [UsageRecord] {
        var records: [UsageRecord] = []
        for i in 1...20 {
            let cache: CacheOutcome = i <= 6 ? .hit : (i <= 16 ? .miss : .bypass)
            let status = i == 17 || i == 18 ? 500 : (i == 19 ? 429 : 200)
            records.append(record(t0 + Int64(i) * 60_000, "engineering", latency: Double(i), status: status,
                                  cache: cache, instance: cache == .hit ? nil : "qwen-\(i % 8)",
                                  preview: cache == .hit ? (i <= 4 ? "popular" : "rare") : "p\(i)"))
        }
        for i in 1...3 {
            records.append(record(t0 + Int64(i) * 1_000, "analytics", latency: Double(100 * i), cache: .off,
                                  prompt: 100, completion: 50))
        }
        records.append(record(t0 - 1, "engineering", latency: 9_999))
        records.append(record(november.toMs, "engineering", latency: 9_999))
        return records
    }

    func testSumsHitRateErrorsAndExactPercentiles() async throws {
        let ledger = try openLedger()
        await insert(knownRecords(), into: ledger)
        let reports = try Reports.departments(databases: [ledger], period: november, department: nil)
        XCTAssertEqual(reports.map(\.department), ["analytics", "engineering"])

        let engineering = reports[1]
        XCTAssertEqual(engineering.requests, 20)
        XCTAssertEqual(engineering.promptTokens, 200)
        XCTAssertEqual(engineering.completionTokens, 100)
        XCTAssertEqual(engineering.totalTokens, 300)
        XCTAssertEqual(engineering.cacheHits, 6)
        XCTAssertEqual(engineering.cacheHitRate, 6.0 / 16.0, accuracy: 1e-12)
        XCTAssertEqual(engineering.errors, 3)
        XCTAssertEqual(engineering.upstreamCalls, 14)
        XCTAssertEqual(engineering.p50LatencyMs, 10)  // rank ⌈0.50 × 20⌉ = 10
        XCTAssertEqual(engineering.p95LatencyMs, 19)  // rank ⌈0.95 × 20⌉ = 19

        let analytics = reports[0]
        XCTAssertEqual(analytics.requests, 3)
        XCTAssertEqual(analytics.cacheHitRate, 0, "no cacheable request")
        XCTAssertEqual(analytics.p50LatencyMs, 200)
        XCTAssertEqual(analytics.p95LatencyMs, 300)

        let one = try Reports.departments(databases: [ledger], period: november, department: "analytics")
        XCTAssertEqual(one, [analytics])
        let nobody = try Reports.departments(databases: [ledger], period: november, department: "nobody")
        XCTAssertEqual(nobody.first?.requests, 0)
    }

    func testTwoLedgersMergeExactly() async throws {
        let records = knownRecords()
        let single = try openLedger("single.sqlite")
        await insert(records, into: single)
        let first = try openLedger("replica-1.sqlite")
        let second = try openLedger("replica-2.sqlite")
        await insert(records.enumerated().filter { $0.offset % 3 == 0 }.map(\.element), into: first)
        await insert(records.enumerated().filter { $0.offset % 3 != 0 }.map(\.element), into: second)

        let merged = try Reports.departments(databases: [first, second], period: november, department: nil)
        XCTAssertEqual(merged, try Reports.departments(databases: [single], period: november, department: nil))
        XCTAssertEqual(merged.first { $0.department == "engineering" }?.p95LatencyMs, 19)
        // Neither the larger nor the mean of the replicas' own p95 (19 and 20) is the merged one.
        XCTAssertEqual(try Reports.departments(databases: [first], period: november, department: "engineering").first?.p95LatencyMs, 19)
        XCTAssertEqual(try Reports.departments(databases: [second], period: november, department: "engineering").first?.p95LatencyMs, 20)
    }

    func testTokenSumsFallBackToReservedTokens() async throws {
        let ledger = try openLedger()
        await insert([
            record(t0, "cs", prompt: 10, completion: 5, reserved: 999),
            record(t0 + 1, "cs", prompt: nil, completion: nil, reserved: 40),
            record(t0 + 2, "cs", prompt: 7, completion: nil, reserved: 999),
            record(t0 + 3, "cs", prompt: nil, completion: nil, reserved: nil),
            record(t0 - 10, "cs", prompt: 1_000, completion: 1_000),
            record(t0, "eng", prompt: 1, completion: 1),
        ], into: ledger)
        let sums = try Reports.tokenSums(database: ledger, department: "cs", since: t0)
        XCTAssertEqual(sums.requests, 4)
        XCTAssertEqual(sums.tokens, 15 + 40 + 7)
        let all = try Reports.tokenSumsByDepartment(database: ledger, since: t0)
        XCTAssertEqual(all.count, 2)
        XCTAssertEqual(all["cs"]?.tokens, 62)
        XCTAssertEqual(all["eng"]?.requests, 1)
        XCTAssertEqual(try Reports.tokenSums(database: ledger, department: "none", since: 0).requests, 0)
    }

    func testAdminQueries() async throws {
        let ledger = try openLedger()
        await insert(knownRecords(), into: ledger)
        // 20 engineering minutes + 3 analytics seconds, in 4 buckets of 6 minutes.
        let from = t0, to = t0 + 24 * 60_000
        let series = try Reports.hitRateSeries(database: ledger, from: from, to: to, buckets: 4)
        XCTAssertEqual(series.map(\.bucketStartMs), [from, from + 360_000, from + 720_000, from + 1_080_000])
        XCTAssertEqual(series.map(\.requests), [5 + 3, 6, 6, 3])
        XCTAssertEqual(series.map(\.hits), [5, 1, 0, 0])
        XCTAssertEqual(series.map(\.misses), [0, 5, 5, 0])
        let engineering = try Reports.hitRateSeries(database: ledger, from: from, to: to, buckets: 4, department: "engineering")
        XCTAssertEqual(engineering.map(\.requests), [5, 6, 6, 3])
        let byDepartment = try Reports.hitRateSeriesByDepartment(database: ledger, from: from, to: to, buckets: 4)
        XCTAssertEqual(byDepartment["engineering"], engineering)
        XCTAssertEqual(byDepartment["analytics"]?.map(\.requests), [3, 0, 0, 0])

        XCTAssertEqual(try Reports.topCachedPrompts(database: ledger, from: t0, limit: 5),
                       [PromptHits(preview: "popular", hits: 4), PromptHits(preview: "rare", hits: 2)])
        let errors = try Reports.recentErrors(database: ledger, limit: 2)
        XCTAssertEqual(errors.map(\.status), [429, 500])
        XCTAssertEqual(errors.first?.latencyMs, 19)
    }

    func testRenderers() async throws {
        let ledger = try openLedger()
        await insert(knownRecords(), into: ledger)
        var reports = try Reports.departments(databases: [ledger], period: november, department: nil)
        reports[1].applyQuota(tokenLimit: 600)
        XCTAssertEqual(reports[1].quotaUsedPercent, 50)

        let csv = Reports.csv(reports).components(separatedBy: "\r\n")
        XCTAssertEqual(csv[0].split(separator: ",").first, "department")
        XCTAssertEqual(csv[2], "engineering,20,200,100,300,6,0.3750,3,10.000,19.000,14,600,50.00")
        XCTAssertEqual(csv[1], "analytics,3,300,150,450,0,0.0000,0,200.000,300.000,3,,")

        let decoded = try JSONDecoder().decode([DepartmentReport].self, from: Data(Reports.json(reports).utf8))
        XCTAssertEqual(decoded, reports)

        let table = Reports.table(reports)
        XCTAssertTrue(table.hasPrefix("DEPARTMENT"))
        XCTAssertTrue(table.contains("engineering"))
        XCTAssertTrue(table.contains("50.0%"))
        XCTAssertTrue(table.contains("TOTAL"))
    }

    func testPeriods() throws {
        let utc = TimeZone(identifier: "UTC")!
        XCTAssertEqual(november.from, ISO8601DateFormatter().date(from: "2026-11-01T00:00:00Z"))
        XCTAssertEqual(november.to, ISO8601DateFormatter().date(from: "2026-12-01T00:00:00Z"))
        let berlin = try ReportPeriod.month("2026-11", timeZone: TimeZone(identifier: "Europe/Berlin")!)
        XCTAssertEqual(berlin.from, ISO8601DateFormatter().date(from: "2026-10-31T23:00:00Z"))
        let december = try ReportPeriod.month("2026-12", timeZone: utc)
        XCTAssertEqual(december.to, ISO8601DateFormatter().date(from: "2027-01-01T00:00:00Z"))
        XCTAssertEqual(try ReportPeriod.days(from: "2026-11-01", to: "2026-11-30", timeZone: utc), november)
        XCTAssertEqual(try ReportPeriod.days(from: "2026-11-05", to: "2026-11-05", timeZone: utc).toMs
                       - ReportPeriod.days(from: "2026-11-05", to: "2026-11-05", timeZone: utc).fromMs, 86_400_000)
        for bad in ["2026-13", "2026-1", "26-11", "2026-11-01", "", "2026-00"] {
            XCTAssertEqual(ledgerError(try ReportPeriod.month(bad, timeZone: utc))?.codeString, "invalid_period", bad)
        }
        for (from, to) in [("2026-02-30", "2026-03-01"), ("2026-11-30", "2026-11-01"), ("2026-11", "2026-11-30")] {
            XCTAssertEqual(ledgerError(try ReportPeriod.days(from: from, to: to, timeZone: utc))?.codeString, "invalid_period")
        }
    }
}
