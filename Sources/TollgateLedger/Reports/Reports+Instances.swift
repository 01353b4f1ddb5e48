import GRDB

/// One instance's requests and latency over a period, for the admin page.
public struct InstanceLatency: Sendable, Codable, Equatable {
    public var instance: String
    /// Requests the instance answered (rows naming it).
    public var requests: Int
    /// Of those, answered with status 400 or more.
    public var errors: Int
    /// Nearest-rank percentiles of `latency_ms`, as in `DepartmentReport`.
    public var p50LatencyMs: Double
    public var p95LatencyMs: Double

    public init(instance: String, requests: Int, errors: Int, p50LatencyMs: Double, p95LatencyMs: Double) {
        self.instance = instance
        self.requests = requests
        self.errors = errors
        self.p50LatencyMs = p50LatencyMs
        self.p95LatencyMs = p95LatencyMs
    }
}

extension Reports {
    /// Requests, errors and p50/p95 latency per instance in [`from`, `to`) (Unix ms), sorted
    /// by instance name. Read department by department from the covering index
    /// `usage_department_time`, never from the wide rows.
    public static func instanceLatencies(database: LedgerDatabase, from: Int64, to: Int64) throws -> [InstanceLatency] {
        guard to > from else { return [] }
        var latencies: [String: [Double]] = [:]
        var errors: [String: Int] = [:]
        try database.pool.read { db in
            let statement = try db.cachedStatement(sql: """
                SELECT instance, latency_ms, status FROM usage
                WHERE department = ? AND time_ms >= ? AND time_ms < ? AND instance IS NOT NULL
                """)
            for department in try departmentNames(db) {
                let rows = try Row.fetchCursor(statement, arguments: [department, from, to])
                while let row = try rows.next() {
                    let instance: String = row[0]
                    latencies[instance, default: []].append(row[1])
                    if (row[2] as Int) >= 400 { errors[instance, default: 0] += 1 }
                }
            }
        }
        return latencies.keys.sorted().map { name in
            let sorted = latencies[name]!.sorted()
            return InstanceLatency(instance: name, requests: sorted.count, errors: errors[name] ?? 0,
                                   p50LatencyMs: percentile(sorted, 50), p95LatencyMs: percentile(sorted, 95))
        }
    }
}
