import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import TollgateCore
import TollgateDataPlane
import TollgateLedger

/// Where the usage ledger lives and how it is written.
public struct LedgerSettings: Sendable {
    /// The SQLite file (created with its migrations when missing).
    public var databasePath: String
    /// The `migrations/` directory with the numbered SQL files.
    public var migrationsDirectory: String
    /// Written into every row, so that merged reports can tell gateway replicas apart.
    public var replica: String?
    /// How often the key table is re-read from the database (keys created or revoked by
    /// another process, e.g. `tollgate keys revoke`).
    public var keyRefreshInterval: Duration = .milliseconds(500)
    /// Usage reports (`/v1/usage` and the admin quota report together) admitted at a time;
    /// more get 503 with `Retry-After` (see `ReportGate`).
    public var maxConcurrentReports = 4
    /// Usage rows waiting for the writer at which the ledger is saturated and the data plane
    /// refuses new requests (`UsageWriter.isSaturated`).
    public var maxBacklog = 100_000
    /// At shutdown, how long the writer may take to commit what is pending (a full disk would
    /// otherwise keep SIGTERM waiting forever); what is left is logged as lost.
    public var closeTimeout: Duration = .seconds(30)

    public init(databasePath: String, migrationsDirectory: String, replica: String? = nil) {
        self.databasePath = databasePath
        self.migrationsDirectory = migrationsDirectory
        self.replica = replica
    }
}

/// The open ledger of a running gateway: database, writer, keys, and the thread that keeps
/// the data plane's key table in step with the `api_keys` table.
///
/// It lives in TollgateServer, not TollgateLedger, because it joins the two: it pushes the
/// keys into the data plane (`DataPlane.publisher.installKeys`), builds the data plane's
/// `UsageSink` around its writer, and seeds the data plane's quota counters. The ledger
/// module itself knows nothing of NIO or the data plane.
public final class Ledger: Sendable {
    public let database: LedgerDatabase
    public let writer: UsageWriter
    public let keys: KeyStore
    public let sink: UsageSink
    /// Admission of usage reports; the data plane should enter it before queueing a
    /// `/v1/usage` report on its thread pool.
    public let reportGate: ReportGate
    let settings: LedgerSettings
    private let logger: Logger
    private let stopping = NIOLockedValueBox(false)
    private let lastKeys = NIOLockedValueBox<[ActiveKey]?>(nil)

    /// Opens (and migrates) the database. Throws a `LedgerError` that says what to do when a
    /// shipped migration was changed or the database is newer than this build.
    public init(settings: LedgerSettings, logger: Logger) throws {
        let migrations = try MigrationLoader.load(directory: settings.migrationsDirectory)
        self.database = try LedgerDatabase.open(path: settings.databasePath, migrations: migrations)
        self.writer = UsageWriter(database: database, maxBacklog: settings.maxBacklog, logger: logger)
        self.keys = KeyStore(database: database)
        self.sink = UsageSink(writer: writer, replica: settings.replica)
        self.reportGate = ReportGate(limit: settings.maxConcurrentReports)
        self.settings = settings
        self.logger = logger
    }

    /// Loads the active keys into `dataPlane` now and keeps them current.
    func startKeyRefresh(into dataPlane: DataPlane) throws {
        try refreshKeys(into: dataPlane)?.wait()
        let thread = Thread { [self] in
            while !stopping.withLockedValue({ $0 }) {
                Thread.sleep(forTimeInterval: Double(settings.keyRefreshInterval.components.attoseconds) / 1e18
                             + Double(settings.keyRefreshInterval.components.seconds))
                do {
                    try refreshKeys(into: dataPlane)?.wait()
                    let used = sink.takeLastUsed()
                    if !used.isEmpty { try keys.recordLastUsed(used) }
                } catch {
                    logger.error("reading API keys from the ledger failed; keeping the current ones", metadata: ["error": "\(error)"])
                }
            }
        }
        thread.name = "tollgate-key-refresh"
        thread.start()
    }

    /// Re-reads the keys; publishes a new table only when they changed. The future completes
    /// once the data plane uses it (a blocking call: not from an event loop).
    @discardableResult
    public func refreshKeys(into dataPlane: DataPlane) throws -> EventLoopFuture<Void>? {
        let active = try keys.activeKeys()
        let changed = lastKeys.withLockedValue { last -> Bool in
            defer { last = active }
            return last != active
        }
        guard changed else { return nil }
        return try dataPlane.publisher.installKeys(active).map { _ in () }
    }

    /// Stops the refresher, commits the pending rows (within `closeTimeout`) and stops the
    /// writer. Returns how many rows could not be written.
    @discardableResult
    public func close() async -> Int {
        stopping.withLockedValue { $0 = true }
        return await writer.close(timeout: settings.closeTimeout)
    }
}

extension Ledger {
    /// Reports for `department` (nil: all) with the monthly token quota filled in, for the
    /// period a query string names (`period=2026-11` or `from=…&to=…`; default: this month).
    static func reports(database: LedgerDatabase, dataPlane: DataPlane?, department: String?, query: String,
                        timeZone: TimeZone) throws -> Result<(ReportPeriod, [DepartmentReport]), GatewayError> {
        var params: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
            if kv.count == 2 { params[kv[0]] = kv[1] }
        }
        let period: ReportPeriod
        do {
            if let from = params["from"], let to = params["to"] {
                period = try ReportPeriod.days(from: from, to: to, timeZone: timeZone)
            } else {
                let f = DateFormatter()
                f.dateFormat = "yyyy-MM"
                f.timeZone = timeZone
                period = try ReportPeriod.month(params["period"] ?? f.string(from: Date()), timeZone: timeZone)
            }
            // Over HTTP a report covers at most a year: the range bounds its work.
            try period.checkLength()
        } catch {
            return .failure(.invalidRequest("\(error)", param: "period"))
        }
        var reports = try Reports.departments(databases: [database], period: period, department: department)
        if let config = dataPlane?.state.table.configuration {
            let known = Set(reports.map(\.department))
            for d in config.departments where (department == nil || d.name == department) && !known.contains(d.name) {
                reports.append(DepartmentReport(department: d.name, requests: 0, promptTokens: 0, completionTokens: 0, totalTokens: 0,
                                                cacheHits: 0, cacheHitRate: 0, errors: 0, p50LatencyMs: 0, p95LatencyMs: 0, upstreamCalls: 0))
            }
            for i in reports.indices {
                if let limit = config.departments.first(where: { $0.name == reports[i].department })?.quota.tokensPerMonth {
                    reports[i].applyQuota(tokenLimit: limit)
                }
            }
        }
        return .success((period, reports.sorted { $0.department < $1.department }))
    }

    /// `GET /admin/api/reports/quota`: every department. The admin API enters `reportGate`
    /// before it queues this on its thread pool.
    func quotaReporter(dataPlane: DataPlane) -> @Sendable (String) throws -> (status: Int, body: String) {
        let database = self.database
        return { @Sendable query in
            let zone = dataPlane.state.table.configuration.quotas.timeZone
            switch try Ledger.reports(database: database, dataPlane: dataPlane, department: nil, query: query, timeZone: zone) {
            case .failure(let e): return (e.status, e.body)
            case .success(let (period, reports)):
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                encoder.dateEncodingStrategy = .iso8601
                struct Answer: Encodable { let object = "quota_report"; let from: Date; let to: Date; let data: [DepartmentReport] }
                return (200, String(decoding: try encoder.encode(Answer(from: period.from, to: period.to, data: reports)), as: UTF8.self) + "\n")
            }
        }
    }

    /// `GET /v1/usage` for one department: `period=2026-11` or `from=2026-11-01&to=2026-11-30`
    /// (default: the current month, in the gateway's time zone).
    func usageReporter(timeZone: TimeZone = .current) -> UsageReporter {
        let database = self.database
        let gate = reportGate
        return { department, query in
            // Entered here, on the pool's thread, this bounds the reports running; to bound the
            // ones waiting too the data plane should enter `reportGate` before queueing.
            guard gate.tryEnter() else { return (GatewayError.reportsBusy.status, GatewayError.reportsBusy.body) }
            defer { gate.leave() }
            switch try Ledger.reports(database: database, dataPlane: nil, department: department, query: query, timeZone: timeZone) {
            case .failure(let e):
                return (e.status, e.body)
            case .success(let (period, reports)):
                let report = reports.first { $0.department == department }
                    ?? DepartmentReport(department: department, requests: 0, promptTokens: 0, completionTokens: 0, totalTokens: 0,
                                        cacheHits: 0, cacheHitRate: 0, errors: 0, p50LatencyMs: 0, p95LatencyMs: 0, upstreamCalls: 0)
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                encoder.dateEncodingStrategy = .iso8601
                struct Answer: Encodable {
                    let object = "usage_report"
                    let department: String
                    let from: Date
                    let to: Date
                    let report: DepartmentReport
                }
                let body = try encoder.encode(Answer(department: department, from: period.from, to: period.to, report: report))
                return (200, String(decoding: body, as: UTF8.self) + "\n")
            }
        }
    }
}

extension Ledger {
    /// Seeds the quota counters from the ledger, so that a restart does not hand every
    /// department a fresh minute, day and month.
    func seedQuotas(_ dataPlane: DataPlane, nowMs: Int64 = wallClockMs()) throws {
        let book = dataPlane.state.quotas
        var calendar = QuotaCalendar(timeZone: book.settings.timeZone)
        let now = calendar.current(atMs: nowMs)
        let minute = try Reports.tokenSumsByDepartment(database: database, since: now.minuteStart)
        let day = try Reports.tokenSumsByDepartment(database: database, since: now.dayStart)
        let month = try Reports.tokenSumsByDepartment(database: database, since: now.monthStart)
        for (i, name) in book.names.enumerated() {
            let counters = book.departments[i].counters
            counters[QuotaMeter.requestsPerMinute.rawValue].seed(window: now.minute, amount: minute[name]?.requests ?? 0)
            counters[QuotaMeter.tokensPerMinute.rawValue].seed(window: now.minute, amount: minute[name]?.tokens ?? 0)
            counters[QuotaMeter.tokensPerDay.rawValue].seed(window: now.day, amount: day[name]?.tokens ?? 0)
            counters[QuotaMeter.tokensPerMonth.rawValue].seed(window: now.month, amount: month[name]?.tokens ?? 0)
        }
    }
}
