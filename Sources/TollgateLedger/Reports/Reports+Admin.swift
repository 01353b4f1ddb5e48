import GRDB
import TollgateCore

/// The admin page's queries. Times are Unix milliseconds; ranges are half-open.
extension Reports {
    /// Requests, hits and misses in `buckets` equal slices of [`from`, `to`), overall or for
    /// one department. Empty slices are included, with zeros.
    public static func hitRateSeries(database: LedgerDatabase, from: Int64, to: Int64, buckets: Int,
                                     department: String? = nil) throws -> [HitRateBucket] {
        guard buckets > 0, to > from else { return [] }
        let width = bucketWidth(from: from, to: to, buckets: buckets)
        return try database.pool.read { db in
            var series = emptySeries(from: from, width: width, buckets: buckets)
            if let department {
                try addDepartment(db, department: department, from: from, to: to, width: width, into: &series)
            } else {
                // One query per outcome on the (cache, time_ms) index: no row is read.
                for outcome in CacheOutcome.allCases {
                    let rows = try Row.fetchAll(db, sql: """
                        SELECT (time_ms - ?) / ?, count(*) FROM usage
                        WHERE cache = ? AND time_ms >= ? AND time_ms < ? GROUP BY 1
                        """, arguments: [from, width, outcome.rawValue, from, to])
                    for row in rows {
                        add(outcome, count: row[1], at: row[0], to: &series)
                    }
                }
            }
            return series
        }
    }

    /// `hitRateSeries` for every department with requests in [`from`, `to`).
    public static func hitRateSeriesByDepartment(database: LedgerDatabase, from: Int64, to: Int64,
                                                 buckets: Int) throws -> [String: [HitRateBucket]] {
        guard buckets > 0, to > from else { return [:] }
        let width = bucketWidth(from: from, to: to, buckets: buckets)
        return try database.pool.read { db in
            var result: [String: [HitRateBucket]] = [:]
            for name in try departmentNames(db) {
                var series = emptySeries(from: from, width: width, buckets: buckets)
                try addDepartment(db, department: name, from: from, to: to, width: width, into: &series)
                if series.contains(where: { $0.requests > 0 }) { result[name] = series }
            }
            return result
        }
    }

    /// The prompts answered most often from the cache since `from`, by their preview.
    public static func topCachedPrompts(database: LedgerDatabase, from: Int64, limit: Int) throws -> [PromptHits] {
        try database.pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT prompt_preview, count(*) AS hits FROM usage
                WHERE cache = 'hit' AND time_ms >= ? AND prompt_preview IS NOT NULL
                GROUP BY prompt_preview ORDER BY hits DESC, prompt_preview LIMIT ?
                """, arguments: [from, limit]).map { PromptHits(preview: $0[0], hits: $0[1]) }
        }
    }

    /// The latest requests answered with status 400 or more, newest first.
    public static func recentErrors(database: LedgerDatabase, limit: Int) throws -> [UsageRecord] {
        try database.pool.read { db in
            // `status >= 400` matches the partial index usage_errors_time.
            try Row.fetchAll(db, sql: """
                SELECT \(UsageRecord.selectColumns) FROM usage
                WHERE status >= 400 ORDER BY time_ms DESC, id DESC LIMIT ?
                """, arguments: [limit]).map(UsageRecord.init(row:))
        }
    }

    private static func bucketWidth(from: Int64, to: Int64, buckets: Int) -> Int64 {
        max(1, (to - from + Int64(buckets) - 1) / Int64(buckets))
    }

    private static func emptySeries(from: Int64, width: Int64, buckets: Int) -> [HitRateBucket] {
        (0..<buckets).map { HitRateBucket(bucketStartMs: from + Int64($0) * width, requests: 0, hits: 0, misses: 0) }
    }

    private static func addDepartment(_ db: Database, department: String, from: Int64, to: Int64, width: Int64,
                                      into series: inout [HitRateBucket]) throws {
        let rows = try Row.fetchAll(db, sql: """
            SELECT (time_ms - ?) / ?, cache, count(*) FROM usage
            WHERE department = ? AND time_ms >= ? AND time_ms < ? GROUP BY 1, 2
            """, arguments: [from, width, department, from, to])
        for row in rows {
            let outcome = CacheOutcome(rawValue: row[1]) ?? .off
            add(outcome, count: row[2], at: row[0], to: &series)
        }
    }

    private static func add(_ outcome: CacheOutcome, count: Int, at index: Int, to series: inout [HitRateBucket]) {
        guard series.indices.contains(index) else { return }
        series[index].requests += count
        if outcome == .hit { series[index].hits += count }
        if outcome == .miss { series[index].misses += count }
    }
}
