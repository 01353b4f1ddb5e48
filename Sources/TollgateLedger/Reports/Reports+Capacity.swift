import GRDB
import TollgateCore

/// What the capacity panel reads from the ledger: per instance (or, for requests no instance
/// answered, per model) over a window, and per department the GPU time used and saved.
public struct CapacityRow: Sendable, Equatable {
    /// The answering instance; nil for requests no instance answered (then `model` tells the pool).
    public var instance: String?
    public var model: String?
    public var requests: Int
    public var latencySumMs: Double
    /// Time an instance was busy with these requests: latency less the time waited for a slot.
    public var busySumMs: Double
    public var waited: Int
    public var waitSumMs: Double
    /// 504 answers.
    public var upstreamTimeouts: Int
    /// 503 `queue_timeout` and `queue_full`.
    public var shed: Int

    public init(instance: String?, model: String?, requests: Int, latencySumMs: Double, busySumMs: Double, waited: Int, waitSumMs: Double,
                upstreamTimeouts: Int, shed: Int) {
        self.instance = instance
        self.model = model
        self.requests = requests
        self.latencySumMs = latencySumMs
        self.busySumMs = busySumMs
        self.waited = waited
        self.waitSumMs = waitSumMs
        self.upstreamTimeouts = upstreamTimeouts
        self.shed = shed
    }
}

/// One department's GPU time over a window: busy time of its forwarded requests, and the
/// busy time its cache hits would have taken (hits × the mean busy time of its forwarded
/// requests that were looked up and missed, else of all its forwarded requests).
public struct GPUTime: Sendable, Equatable, Encodable {
    public var department: String
    public var usedSeconds: Double
    public var savedByCacheSeconds: Double
}

extension Reports {
    /// Per instance and model in [`from`, `to`): requests, latency, busy time, waits, timeouts, sheds.
    public static func capacityRows(database: LedgerDatabase, from: Int64, to: Int64) throws -> [CapacityRow] {
        try database.pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT instance, model, count(*), sum(latency_ms), sum(max(latency_ms - coalesce(queue_ms, 0), 0)),
                       count(queue_ms), coalesce(sum(queue_ms), 0),
                       sum(status = 504), sum(error_code IN ('queue_timeout', 'queue_full'))
                FROM usage WHERE time_ms >= ? AND time_ms < ? AND (instance IS NOT NULL OR error_code IS NOT NULL)
                GROUP BY instance, model
                """, arguments: [from, to]).map { row in
                CapacityRow(instance: row[0], model: row[1], requests: row[2], latencySumMs: row[3] ?? 0, busySumMs: row[4] ?? 0,
                            waited: row[5], waitSumMs: row[6] ?? 0, upstreamTimeouts: row[7] ?? 0, shed: row[8] ?? 0)
            }
        }
    }

    /// Per department in [`from`, `to`): GPU seconds used and saved by the cache.
    public static func gpuTime(database: LedgerDatabase, from: Int64, to: Int64) throws -> [GPUTime] {
        try database.pool.read { db in
            try Row.fetchAll(db, sql: """
                SELECT department,
                       coalesce(sum(CASE WHEN instance IS NOT NULL THEN max(latency_ms - coalesce(queue_ms, 0), 0) END), 0),
                       count(CASE WHEN instance IS NOT NULL THEN 1 END),
                       coalesce(sum(CASE WHEN instance IS NOT NULL AND cache = 'miss' THEN max(latency_ms - coalesce(queue_ms, 0), 0) END), 0),
                       count(CASE WHEN instance IS NOT NULL AND cache = 'miss' THEN 1 END),
                       count(CASE WHEN cache = 'hit' THEN 1 END)
                FROM usage WHERE time_ms >= ? AND time_ms < ? GROUP BY department ORDER BY department
                """, arguments: [from, to]).map { row in
                let used: Double = row[1], forwarded: Int = row[2], missBusy: Double = row[3], misses: Int = row[4], hits: Int = row[5]
                let perRequest = misses > 0 ? missBusy / Double(misses) : (forwarded > 0 ? used / Double(forwarded) : 0)
                return GPUTime(department: row[0], usedSeconds: used / 1000, savedByCacheSeconds: Double(hits) * perRequest / 1000)
            }
        }
    }
}
