import Foundation
import NIOCore
import TollgateCore
import TollgateDataPlane
import TollgateLedger

/// The windows the admin page offers (`?window=`).
enum AdminWindow: String, CaseIterable, Sendable {
    case hour = "1h"
    case day = "24h"
    case week = "7d"

    static let defaultWindow = AdminWindow.hour

    var milliseconds: Int64 {
        switch self {
        case .hour: 3_600_000
        case .day: 86_400_000
        case .week: 7 * 86_400_000
        }
    }

    /// Points of the hit-rate chart: 1-minute, 30-minute and 3-hour buckets.
    var buckets: Int {
        switch self {
        case .hour: 60
        case .day: 48
        case .week: 56
        }
    }

    var label: String {
        switch self {
        case .hour: "last hour"
        case .day: "last 24 hours"
        case .week: "last 7 days"
        }
    }

    /// [from, to) ending at the bucket boundary after `nowMs`, so buckets fall on whole
    /// minutes (hours) and a page reloaded a few seconds later shows the same slices.
    func range(nowMs: Int64) -> (from: Int64, to: Int64) {
        let width = milliseconds / Int64(buckets)
        let to = (nowMs / width + 1) * width
        return (to - milliseconds, to)
    }
}

/// Everything the admin page shows for one window; also `GET /admin/api/overview`.
///
/// Ledger figures come from the same `Reports` functions as `tollgate report` over the same
/// half-open range [`fromMs`, `toMs`), so they agree with it; live figures (quota counters,
/// instance health, in-flight) from the data plane's current snapshot.
struct AdminOverview: Encodable, Sendable {
    struct Cache: Encodable, Sendable {
        /// Every request of the window (all departments).
        var requests: Int
        var hits: Int
        var misses: Int
        /// hits / (hits + misses); 0 when nothing was cacheable.
        var hitRate: Double
        /// Requests answered from the cache, and so upstream calls saved.
        var servedFromCache: Int
        var upstreamCallsSaved: Int
    }

    struct Meter: Encodable, Sendable {
        /// `requests_per_minute`, `tokens_per_minute`, `tokens_per_day`, `tokens_per_month`.
        var meter: String
        var limit: Int
        /// Live counter of the current calendar window.
        var used: Int
        var usedPercent: Double
        /// When the window ends, Unix ms.
        var resetsMs: Int64
    }

    struct Quota: Encodable, Sendable {
        var department: String
        /// Where `used` comes from: `redis` (shared by the replicas) or `local` (this replica's
        /// counters: no Redis, or Redis not answering).
        var source: String
        /// Empty when the department has no quota.
        var meters: [Meter]
        /// Prompt + completion tokens this calendar month in the ledger (reserved tokens for
        /// rows without usage), as quota seeding counts them.
        var ledgerMonthTokens: Int?
    }

    struct Share: Encodable, Sendable {
        var department: String
        /// Percent of the department's traffic in this instance's pool.
        var percent: Double
    }

    struct Instance: Encodable, Sendable {
        var name: String
        var pool: String
        var url: String
        var labels: [String: String]
        var weight: Int
        var available: Bool
        var probeUp: Bool
        var ejected: Bool
        var ejections: Int
        var recentFailures: Int
        var inFlight: Int
        var shares: [Share]
        /// From the ledger over the window.
        var requests: Int
        var errors: Int
        var p50LatencyMs: Double
        var p95LatencyMs: Double
    }

    struct ErrorRow: Encodable, Sendable {
        var timeMs: Int64
        var requestID: String
        var department: String
        var instance: String?
        var model: String?
        var status: Int
        var latencyMs: Double
    }

    /// One lane and department of the waiting lines, live since start (`/metrics`' figures).
    struct Queue: Encodable, Sendable {
        var lane: String
        var department: String
        var waiting: Int
        var dispatched: Int
        var timedOut: Int
        var full: Int
        var shed: Int
        var meanWaitMs: Double
        /// Upper bound of the bucket holding the 95th percentile wait (nil: past the last bound).
        var p95WaitMs: Double?
    }

    /// The capacity panel: one verdict per pool with its evidence.
    struct Capacity: Encodable, Sendable {
        var pool: String
        var verdict: String
        var summary: String
        var roomPerSecond: Int?
        var evidence: [String]
        var forwarded: Int
        var meanLatencyMs: Double
        var upstreamTimeouts: Int
        var waited: Int
        var meanWaitMs: Double
        var shed: Int
        var waitingNow: Int
        var slots: Int?
    }

    struct Redis: Encodable, Sendable {
        var configured: Bool
        var availableConnections: Int
        var connections: Int
        var outages: Int
    }

    struct Live: Encodable, Sendable {
        var generation: Int
        var activeRequests: Int
        var activeConnections: Int
        var quotaRejections: Int
        var quotaFallbacks: Int
        var redis: Redis
        var ledgerQueueDepth: Int?
        var ledgerLastWriteLatencyMs: Double?
        var ledgerCommittedRows: Int?
    }

    var object = "admin_overview"
    var window: String
    var windowLabel: String
    var fromMs: Int64
    var toMs: Int64
    var generatedMs: Int64
    var timeZone: String
    /// False for a gateway without a ledger: ledger figures are then empty.
    var ledger: Bool
    var cache: Cache
    var series: [HitRateBucket]
    var seriesByDepartment: [String: [HitRateBucket]]
    /// As `tollgate report` computes them, for [fromMs, toMs); every configured department.
    var departments: [DepartmentReport]
    var topPrompts: [PromptHits]
    /// What the ledger keeps of prompts: `off`, or the number of characters, globally and for
    /// each department that differs (`prompt_preview`).
    var promptPreview: PromptPreviewSettings
    var quotas: [Quota]
    var instances: [Instance]
    var recentErrors: [ErrorRow]
    var live: Live
    /// The waiting lines per lane and department (live, since start).
    var queues: [Queue]
    /// Per pool, over the window: add instances, or the room left.
    var capacity: [Capacity]
    /// Per department, over the window: GPU seconds used and saved by the cache.
    var gpu: [GPUTime]
    /// Every figure above but `fleet` is this replica's (its ledger, its counters); this
    /// names it (`--replica`), when the gateway runs with Redis.
    var replica: String?
    /// With Redis: the whole fleet, from the replicas' per-minute rollups (`FleetView`);
    /// absent without Redis or while it does not answer.
    var fleet: FleetSection?

    /// The fleet view: totals, and the same figures per replica, department and instance.
    struct FleetSection: Encodable, Sendable {
        var source = "redis_rollups"
        /// "minute" (the 1-hour window) or "hour" (24 hours, 7 days: whole hours, so up to an
        /// hour more at the edges).
        var granularity: String
        var fromMs: Int64
        var toMs: Int64
        var total: FleetFigures
        var replicas: [FleetFigures]
        var departments: [FleetFigures]
        var instances: [FleetFigures]
        /// Fields in Redis that were not rollups (dropped).
        var malformedFields: Int

        init(_ view: FleetView) {
            granularity = view.granularity
            fromMs = view.fromMs
            toMs = view.toMs
            total = FleetFigures(name: "fleet", view.total)
            replicas = view.sum { $0.replica }.map { FleetFigures(name: $0.0, $0.1) }
            departments = view.sum { $0.department }.map { FleetFigures(name: $0.0, $0.1) }
            instances = view.sum { $0.instance }.filter { !$0.0.isEmpty }.map { FleetFigures(name: $0.0, $0.1) }
            malformedFields = view.malformedFields
        }
    }

    struct FleetFigures: Encodable, Sendable {
        var name: String
        var requests: Int
        var hits: Int
        var misses: Int
        var hitRate: Double
        var errors: Int
        var tokens: Int
        /// From the rollups' latency buckets: the bucket's upper bound.
        var p50LatencyMs: Int
        var p95LatencyMs: Int

        init(name: String, _ c: RollupCounts) {
            self.name = name
            requests = c.requests
            hits = c.hits
            misses = c.misses
            hitRate = c.hitRate
            errors = c.errors
            tokens = c.tokens
            p50LatencyMs = c.percentileMs(0.5)
            p95LatencyMs = c.percentileMs(0.95)
        }
    }

    static let topPromptCount = 10
    static let recentErrorCount = 15

    /// Gathers the overview: SQLite on the thread pool, live state by hops to the loops.
    static func build(window: AdminWindow, services: AdminServices, dataPlane: DataPlane,
                      nowMs: Int64 = wallClockMs()) async throws -> AdminOverview {
        let (fromMs, toMs) = window.range(nowMs: nowMs)
        let metrics = await dataPlane.metricsSnapshot()
        let health = try await dataPlane.monitor.snapshot().get()
        let state = metrics.state
        let table = state.table
        let settings = state.quotas.settings
        var calendar = QuotaCalendar(timeZone: settings.timeZone)
        let windows = calendar.current(atMs: nowMs)

        struct LedgerFigures: Sendable {
            var series: [HitRateBucket] = []
            var byDepartment: [String: [HitRateBucket]] = [:]
            var departments: [DepartmentReport] = []
            var prompts: [PromptHits] = []
            var instances: [InstanceLatency] = []
            var errors: [UsageRecord] = []
            var monthTokens: [String: Int] = [:]
            var capacity: [CapacityRow] = []
            var gpu: [GPUTime] = []
        }
        let figures: LedgerFigures
        if let ledger = services.ledger {
            let names = table.departments.map(\.name)
            figures = try await offload {
                var f = LedgerFigures()
                f.series = try Reports.hitRateSeries(database: ledger, from: fromMs, to: toMs, buckets: window.buckets)
                f.byDepartment = try Reports.hitRateSeriesByDepartment(database: ledger, from: fromMs, to: toMs, buckets: window.buckets)
                f.departments = try Reports.departments(
                    databases: [ledger], period: ReportPeriod(from: Date(unixMs: fromMs), to: Date(unixMs: toMs)), department: nil)
                f.prompts = try Reports.topCachedPrompts(database: ledger, from: fromMs, limit: topPromptCount)
                f.instances = try Reports.instanceLatencies(database: ledger, from: fromMs, to: toMs)
                f.errors = try Reports.recentErrors(database: ledger, limit: recentErrorCount)
                f.capacity = try Reports.capacityRows(database: ledger, from: fromMs, to: toMs)
                f.gpu = try Reports.gpuTime(database: ledger, from: fromMs, to: toMs)
                for name in names {
                    f.monthTokens[name] = try Reports.tokenSums(database: ledger, department: name, since: windows.monthStart).tokens
                }
                return f
            }
        } else {
            figures = LedgerFigures()
        }

        let hits = figures.series.reduce(0) { $0 + $1.hits }
        let misses = figures.series.reduce(0) { $0 + $1.misses }
        let cache = Cache(
            requests: figures.series.reduce(0) { $0 + $1.requests }, hits: hits, misses: misses,
            hitRate: hits + misses > 0 ? Double(hits) / Double(hits + misses) : 0,
            servedFromCache: hits, upstreamCallsSaved: hits)

        // Every configured department appears, with zeros when it had no requests.
        var departments = figures.departments
        let reported = Set(departments.map(\.department))
        for d in table.departments where !reported.contains(d.name) {
            departments.append(DepartmentReport(department: d.name, requests: 0, promptTokens: 0, completionTokens: 0, totalTokens: 0,
                                                cacheHits: 0, cacheHitRate: 0, errors: 0, p50LatencyMs: 0, p95LatencyMs: 0, upstreamCalls: 0))
        }
        departments.sort { $0.department < $1.department }

        let quotas = table.departments.map { d -> Quota in
            let limits = state.quotas.departments[d.index].limits
            let used = state.quotas.usage(department: d.index, at: windows)
            let meters = QuotaMeter.allCases.compactMap { meter -> Meter? in
                guard let limit = limits.limit(meter) else { return nil }
                let value = used[meter] ?? 0
                return Meter(meter: meter.name, limit: limit, used: value,
                             usedPercent: limit > 0 ? Double(value) * 100 / Double(limit) : 0,
                             resetsMs: windows.end(meter.window))
            }
            return Quota(department: d.name, source: dataPlane.redis == nil ? "local" : "redis", meters: meters, ledgerMonthTokens: figures.monthTokens[d.name])
        }

        let latencies = Dictionary(figures.instances.map { ($0.instance, $0) }, uniquingKeysWith: { a, _ in a })
        let instances = InstanceStatus.all(in: state, health: health).map { status -> Instance in
            let inst = table.instances[status.index]
            let shares = table.departments.compactMap { d -> Share? in
                let candidates = d.candidates[inst.pool]
                let total = candidates.reduce(0) { $0 + $1.weight }
                guard total > 0, let mine = candidates.first(where: { $0.instance == inst.index }) else { return nil }
                return Share(department: d.name, percent: Double(mine.weight) * 100 / Double(total))
            }
            let l = latencies[inst.name]
            return Instance(
                name: status.name, pool: status.pool, url: status.url, labels: status.labels,
                weight: status.weight, available: status.available, probeUp: status.probeUp, ejected: status.ejected,
                ejections: status.ejections, recentFailures: status.recentFailures,
                inFlight: metrics.inFlight.indices.contains(inst.index) ? metrics.inFlight[inst.index] : 0,
                shares: shares, requests: l?.requests ?? 0, errors: l?.errors ?? 0,
                p50LatencyMs: l?.p50LatencyMs ?? 0, p95LatencyMs: l?.p95LatencyMs ?? 0)
        }

        var fleet: FleetSection?
        if let hooks = services.fleet, let view = try? await offload({ hooks.view(fromMs, toMs) }) {
            fleet = FleetSection(view)
        }

        let live = Live(
            generation: table.generation, activeRequests: metrics.activeRequests, activeConnections: metrics.activeConnections,
            quotaRejections: metrics.quotaRejections, quotaFallbacks: metrics.quotaFallbacks,
            redis: Redis(configured: metrics.redisConfigured, availableConnections: metrics.redisAvailableConnections,
                         connections: metrics.redisConnections, outages: metrics.redisOutages),
            ledgerQueueDepth: services.writer?.queueDepth, ledgerLastWriteLatencyMs: services.writer?.lastWriteLatencyMs,
            ledgerCommittedRows: services.writer?.committedRows)

        let queues = metrics.queues.sorted { $0.key < $1.key }.map { key, q in
            Queue(lane: key.lane.name, department: key.department, waiting: q.waiting, dispatched: q.dispatched, timedOut: q.timedOut,
                  full: q.full, shed: q.shed, meanWaitMs: q.wait.count > 0 ? Double(q.wait.sumMicros) / Double(q.wait.count) / 1000 : 0,
                  p95WaitMs: q.wait.percentileBoundMs(0.95))
        }
        let capacity = capacityPanel(table: table, rows: figures.capacity, metrics: metrics,
                                     windowSeconds: Double(min(nowMs, toMs) - fromMs) / 1000)

        return AdminOverview(
            window: window.rawValue, windowLabel: window.label, fromMs: fromMs, toMs: toMs, generatedMs: nowMs,
            timeZone: settings.timeZone.identifier, ledger: services.ledger != nil, cache: cache,
            series: figures.series, seriesByDepartment: figures.byDepartment, departments: departments,
            topPrompts: figures.prompts, promptPreview: PromptPreviewSettings(table.configuration), quotas: quotas, instances: instances,
            recentErrors: figures.errors.map {
                ErrorRow(timeMs: $0.timeMs, requestID: $0.requestID, department: $0.department, instance: $0.instance,
                         model: $0.model, status: $0.status, latencyMs: $0.latencyMs)
            },
            live: live, queues: queues, capacity: capacity, gpu: figures.gpu, replica: services.fleet?.replica, fleet: fleet)
    }

    /// The ledger's per-instance figures summed per pool, the live waiting lines beside them,
    /// judged by `CapacityAdvice`.
    static func capacityPanel(table: RoutingTable, rows: [CapacityRow], metrics: MetricsSnapshot, windowSeconds: Double) -> [Capacity] {
        var byPool = Array(repeating: CapacityRow(instance: nil, model: nil, requests: 0, latencySumMs: 0, busySumMs: 0, waited: 0, waitSumMs: 0,
                                                  upstreamTimeouts: 0, shed: 0), count: table.pools.count)
        var forwarded = Array(repeating: 0, count: table.pools.count)
        let instanceIndex = Dictionary(table.instances.map { ($0.name, $0.pool) }, uniquingKeysWith: { a, _ in a })
        for row in rows {
            guard let pool = row.instance.flatMap({ instanceIndex[$0] }) ?? row.model.flatMap({ table.pool(forModel: $0) }) else { continue }
            byPool[pool].latencySumMs += row.latencySumMs
            byPool[pool].busySumMs += row.busySumMs
            byPool[pool].waited += row.waited
            byPool[pool].waitSumMs += row.waitSumMs
            byPool[pool].upstreamTimeouts += row.upstreamTimeouts
            byPool[pool].shed += row.shed
            if row.instance != nil { forwarded[pool] += row.requests }
        }
        // Waiting now: the lines are per department; a department's waiting requests count for
        // every pool it may use (with one pool, as usual, that is exact).
        let waitingNow = metrics.queues.values.reduce(0) { $0 + $1.waiting }
        return table.pools.indices.map { p in
            let r = byPool[p]
            let limits = table.pools[p].instances.map { table.instances[$0].maxInFlight }
            let slots: Int? = limits.contains(0) ? nil : limits.reduce(0, +)
            let f = CapacityAdvice.Figures(
                pool: table.pools[p].name, windowSeconds: windowSeconds, forwarded: forwarded[p],
                meanLatencyMs: forwarded[p] > 0 ? r.latencySumMs / Double(forwarded[p] + r.shed) : 0,
                meanBusyMs: forwarded[p] > 0 ? r.busySumMs / Double(forwarded[p]) : 0,
                upstreamTimeouts: r.upstreamTimeouts, waited: r.waited, meanWaitMs: r.waited > 0 ? r.waitSumMs / Double(r.waited) : 0,
                shed: r.shed, waitingNow: table.pools.count == 1 ? waitingNow : 0, slots: slots)
            let advice = CapacityAdvice(f)
            return Capacity(pool: f.pool, verdict: advice.verdict.rawValue, summary: advice.summary, roomPerSecond: advice.roomPerSecond,
                            evidence: advice.evidence, forwarded: f.forwarded, meanLatencyMs: f.meanLatencyMs, upstreamTimeouts: f.upstreamTimeouts,
                            waited: f.waited, meanWaitMs: f.meanWaitMs, shed: f.shed, waitingNow: f.waitingNow, slots: f.slots)
        }
    }
}

extension HistogramSnapshot {
    /// The upper bound (ms) of the bucket that holds quantile `q`; nil when empty or past the last bound.
    func percentileBoundMs(_ q: Double) -> Double? {
        let total = count
        guard total > 0 else { return nil }
        let target = Int((Double(total) * q).rounded(.up))
        var seen = 0
        for (i, c) in counts.enumerated() {
            seen += c
            if seen >= target { return i < boundsMicros.count ? Double(boundsMicros[i]) / 1000 : nil }
        }
        return nil
    }
}

extension QuotaMeter {
    /// As the configuration names the limit.
    var name: String {
        switch self {
        case .requestsPerMinute: "requests_per_minute"
        case .tokensPerMinute: "tokens_per_minute"
        case .tokensPerDay: "tokens_per_day"
        case .tokensPerMonth: "tokens_per_month"
        }
    }
}

extension Date {
    init(unixMs: Int64) { self.init(timeIntervalSince1970: Double(unixMs) / 1000) }
}

/// `prompt_preview` as the admin page shows it.
struct PromptPreviewSettings: Encodable, Sendable {
    /// `off` or the number of characters kept.
    var global: String
    /// Departments whose setting differs from the global one: name → `off` or characters.
    var departments: [String: String]

    init(_ configuration: GatewayConfiguration) {
        func text(_ policy: PromptPreviewPolicy) -> String {
            switch policy {
            case .off: return "off"
            case .characters(let n): return "\(n)"
            }
        }
        global = text(configuration.promptPreview)
        var departments: [String: String] = [:]
        for d in configuration.departments {
            let policy = configuration.promptPreview(forDepartment: d.name)
            if policy != configuration.promptPreview { departments[d.name] = text(policy) }
        }
        self.departments = departments
    }

    /// Departments whose prompts are not kept.
    var offDepartments: [String] { departments.filter { $0.value == "off" }.keys.sorted() }
}
