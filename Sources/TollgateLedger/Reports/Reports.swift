import Dispatch
import Foundation
import GRDB

/// Reports over one or more ledgers (one per gateway replica), quota seeding, and the
/// queries behind the admin page. Every call blocks on SQLite: not from an event loop.
///
/// Per-department queries read the covering index `usage_department_time` (department,
/// time_ms, latency_ms, status, cache, tokens, instance) and never the wide rows.
public enum Reports {
    /// Usage per department over `period`, merged over `databases`: counts and sums add up,
    /// and the latency percentiles are exact over the union of all rows (every latency of
    /// the period is read from the index, and the merged list sorted; nearest-rank method:
    /// the p-th percentile is the smallest latency with at least p % of the requests at or
    /// below it). With `department`, only that one, reported even when it has no requests;
    /// without, every department with at least one request, sorted by name.
    public static func departments(databases: [LedgerDatabase], period: ReportPeriod, department: String?) throws -> [DepartmentReport] {
        // The work is cut into (ledger, department, slice of the period) pieces run on every
        // core: counts and sums add up and latency lists concatenate, so the pieces merge
        // exactly, and a department with most of the traffic is not one core's work alone.
        let timeSlices = slices(fromMs: period.fromMs, toMs: period.toMs, count: slicesPerDepartment)
        let pieces = try databases.flatMap { database in
            try (department.map { [$0] } ?? database.pool.read(departmentNames)).flatMap { name in
                timeSlices.map { (database: database, department: name, fromMs: $0.fromMs, toMs: $0.toMs) }
            }
        }
        let results = ResultSlots(count: pieces.count)
        DispatchQueue.concurrentPerform(iterations: pieces.count) { index in
            let piece = pieces[index]
            results.set(index, Result {
                try piece.database.pool.read { db in
                    try accumulate(db, department: piece.department, fromMs: piece.fromMs, toMs: piece.toMs)
                }
            })
        }
        var merged: [String: Accumulator] = [:]
        for (piece, result) in zip(pieces, results.values) {
            let accumulator = try result.get()
            if accumulator.requests > 0 { merged[piece.department, default: Accumulator()].add(accumulator) }
        }
        if let department, merged[department] == nil { merged[department] = Accumulator() }
        return merged.keys.sorted().map { merged[$0]!.report(department: $0) }
    }

    /// Time slices per department and ledger in `departments`: enough for two cores to
    /// share one big department evenly, few enough that per-query costs stay negligible.
    static let slicesPerDepartment = 4

    static func slices(fromMs: Int64, toMs: Int64, count: Int) -> [(fromMs: Int64, toMs: Int64)] {
        guard toMs > fromMs else { return [(fromMs, toMs)] }
        let width = max(1, (toMs - fromMs + Int64(count) - 1) / Int64(count))
        return stride(from: fromMs, to: toMs, by: Int(width)).map { ($0, min($0 + width, toMs)) }
    }

    /// Requests and tokens of `department` since `since` (Unix ms, included): to seed quota
    /// counters after a restart. Tokens are prompt + completion, or the reserved tokens of a
    /// row where both are unknown.
    public static func tokenSums(database: LedgerDatabase, department: String, since: Int64) throws -> (requests: Int, tokens: Int) {
        try database.pool.read { db in
            try tokenSums(db, department: department, since: since)
        }
    }

    /// `tokenSums` for every department that has requests since `since`.
    public static func tokenSumsByDepartment(database: LedgerDatabase, since: Int64) throws -> [String: (requests: Int, tokens: Int)] {
        let pairs = try database.pool.read { db in
            try departmentNames(db).map { name in
                let sums = try tokenSums(db, department: name, since: since)
                return (name, sums.requests, sums.tokens)
            }
        }
        var result: [String: (requests: Int, tokens: Int)] = [:]
        for (name, requests, tokens) in pairs where requests > 0 {
            result[name] = (requests, tokens)
        }
        return result
    }

    // MARK: - Queries

    /// Every department name in the ledger, by a loose scan of the index: one index seek
    /// per department instead of a pass over every row.
    static func departmentNames(_ db: Database) throws -> [String] {
        try String.fetchAll(db, sql: """
            WITH RECURSIVE d(name) AS (
                SELECT min(department) FROM usage
                UNION ALL
                SELECT (SELECT min(department) FROM usage WHERE department > d.name) FROM d
                WHERE d.name IS NOT NULL
            )
            SELECT name FROM d WHERE name IS NOT NULL
            """)
    }

    private static func accumulate(_ db: Database, department: String, fromMs: Int64, toMs: Int64) throws -> Accumulator {
        let arguments: StatementArguments = [department, fromMs, toMs]
        var accumulator = Accumulator()
        if let row = try Row.fetchOne(db, sql: """
            SELECT count(*), total(prompt_tokens), total(completion_tokens),
                   ifnull(sum(cache = 'hit'), 0), ifnull(sum(cache = 'miss'), 0),
                   ifnull(sum(status >= 400), 0), count(instance)
            FROM usage WHERE department = ? AND time_ms >= ? AND time_ms < ?
            """, arguments: arguments) {
            accumulator.requests = row[0]
            accumulator.promptTokens = clampedSum(row[1])
            accumulator.completionTokens = clampedSum(row[2])
            accumulator.hits = row[3]
            accumulator.misses = row[4]
            accumulator.errors = row[5]
            accumulator.upstreamCalls = row[6]
        }
        guard accumulator.requests > 0 else { return accumulator }
        accumulator.latencies.reserveCapacity(accumulator.requests)
        let statement = try db.cachedStatement(
            sql: "SELECT latency_ms FROM usage WHERE department = ? AND time_ms >= ? AND time_ms < ?")
        let cursor = try Double.fetchCursor(statement, arguments: arguments)
        while let latency = try cursor.next() {
            accumulator.latencies.append(latency)
        }
        return accumulator
    }

    private static func tokenSums(_ db: Database, department: String, since: Int64) throws -> (requests: Int, tokens: Int) {
        // `total()`, not `sum()`: sum fails with "integer overflow" past 2^63 (a ledger written
        // before rows were clamped can hold reservations near it), total adds in floating point.
        let row = try Row.fetchOne(db, sql: """
            SELECT count(*), total(CASE
                WHEN prompt_tokens IS NULL AND completion_tokens IS NULL THEN ifnull(reserved_tokens, 0)
                ELSE ifnull(prompt_tokens, 0) + ifnull(completion_tokens, 0) END)
            FROM usage WHERE department = ? AND time_ms >= ?
            """, arguments: [department, since])
        return (row?[0] ?? 0, clampedSum(row?[1] ?? 0))
    }

    /// The largest token sum a report or a quota seed carries (2^53, where doubles stop
    /// being exact). Sums are read with `total()` as doubles and clamped to 0...maxSum, so
    /// that adding a few of them (merged ledgers, prompt + completion) cannot overflow `Int`.
    public static let maxSum = 1 << 53

    static func clampedSum(_ value: Double) -> Int {
        guard value > 0 else { return 0 }  // NaN compares false
        return value >= Double(maxSum) ? maxSum : Int(value)
    }

    /// Nearest-rank percentile of a sorted list: the value at rank ⌈p/100 × n⌉; 0 if empty.
    static func percentile(_ sorted: [Double], _ p: Int) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let rank = (p * sorted.count + 99) / 100
        return sorted[min(max(rank, 1), sorted.count) - 1]
    }

    /// One result slot per piece of work, filled from several threads.
    private final class ResultSlots: @unchecked Sendable {
        private let lock = NSLock()
        private var slots: [Result<Accumulator, any Error>?]

        init(count: Int) { slots = Array(repeating: nil, count: count) }

        func set(_ index: Int, _ result: Result<Accumulator, any Error>) {
            lock.lock()
            slots[index] = result
            lock.unlock()
        }

        var values: [Result<Accumulator, any Error>] {
            lock.lock()
            defer { lock.unlock() }
            return slots.map { $0! }
        }
    }

    struct Accumulator: Sendable {
        var requests = 0
        var promptTokens = 0
        var completionTokens = 0
        var hits = 0
        var misses = 0
        var errors = 0
        var upstreamCalls = 0
        var latencies: [Double] = []

        mutating func add(_ other: Accumulator) {
            requests += other.requests
            promptTokens = min(promptTokens + other.promptTokens, Reports.maxSum)
            completionTokens = min(completionTokens + other.completionTokens, Reports.maxSum)
            hits += other.hits
            misses += other.misses
            errors += other.errors
            upstreamCalls += other.upstreamCalls
            latencies += other.latencies
        }

        func report(department: String) -> DepartmentReport {
            let sorted = latencies.sorted()
            let cacheable = hits + misses
            return DepartmentReport(
                department: department, requests: requests, promptTokens: promptTokens,
                completionTokens: completionTokens, totalTokens: promptTokens + completionTokens,
                cacheHits: hits, cacheHitRate: cacheable > 0 ? Double(hits) / Double(cacheable) : 0,
                errors: errors, p50LatencyMs: Reports.percentile(sorted, 50),
                p95LatencyMs: Reports.percentile(sorted, 95), upstreamCalls: upstreamCalls)
        }
    }
}
