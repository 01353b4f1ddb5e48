import Foundation
import TollgateLedger
import XCTest

/// Times a report over a large ledger, such as the one `scripts/bench-report` builds.
/// Skipped unless `TOLLGATE_BENCH_DB` names the file (and `TOLLGATE_BENCH_PERIOD` the month,
/// 2026-11 by default):
///
///     TOLLGATE_BENCH_DB=/tmp/bench.sqlite swift test --filter ReportBenchmarkTests
final class ReportBenchmarkTests: XCTestCase {
    func testReportOverTheBenchmarkLedger() throws {
        let environment = ProcessInfo.processInfo.environment
        guard let file = environment["TOLLGATE_BENCH_DB"] else { throw XCTSkip("TOLLGATE_BENCH_DB is not set") }
        let ledger = try LedgerDatabase.open(
            path: file, migrations: MigrationLoader.load(directory: LedgerTestCase.repositoryMigrations), readOnly: true)
        let period = try ReportPeriod.month(environment["TOLLGATE_BENCH_PERIOD"] ?? "2026-11", timeZone: TimeZone(identifier: "UTC")!)
        for run in 1...3 {
            let start = ContinuousClock.now
            let reports = try Reports.departments(databases: [ledger], period: period, department: nil)
            let elapsed = ContinuousClock.now - start
            print("report run \(run): \(reports.reduce(0) { $0 + $1.requests }) requests, \(reports.count) departments in \(elapsed)")
            if run == 3 { print(Reports.table(reports)) }
        }
    }
}
