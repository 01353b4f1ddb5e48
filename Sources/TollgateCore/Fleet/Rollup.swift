/// A small per-minute summary of one replica's requests, per department and instance, that the
/// replicas publish to Redis so that any of them can show the whole fleet (the admin page's
/// fleet view). Exact figures still come from merging the ledgers (`tollgate report`).
///
/// In Redis: one hash per minute (`tollgate:rollup:m:<minute>`, kept 2 hours, for the 1-hour
/// window) and one per hour (`tollgate:rollup:h:<hour>`, kept 8 days, for 24 hours and 7 days),
/// each field `<replica>\t<department>\t<instance>\t<counter>` incremented by HINCRBY.
public struct RollupCounts: Sendable, Equatable {
    public var requests = 0
    public var hits = 0
    public var misses = 0
    public var errors = 0
    public var tokens = 0
    /// Requests by latency, in the buckets of `latencyBoundsMs` (and one past the last bound).
    public var latency: [Int] = Array(repeating: 0, count: RollupCounts.latencyBoundsMs.count + 1)

    /// Upper bounds of the latency buckets, in ms.
    public static let latencyBoundsMs: [Int] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000]

    public init() {}

    public mutating func count(status: Int, cache: CacheOutcome, tokens: Int, latencyMs: Double) {
        requests &+= 1
        if cache == .hit { hits &+= 1 }
        if cache == .miss { misses &+= 1 }
        if status >= 400 { errors &+= 1 }
        self.tokens = QuotaAmount.add(self.tokens, tokens)
        let ms = latencyMs.isFinite ? latencyMs : 0
        let bucket = Self.latencyBoundsMs.firstIndex { ms <= Double($0) } ?? Self.latencyBoundsMs.count
        latency[bucket] &+= 1
    }

    public mutating func add(_ other: RollupCounts) {
        requests = QuotaAmount.add(requests, other.requests)
        hits = QuotaAmount.add(hits, other.hits)
        misses = QuotaAmount.add(misses, other.misses)
        errors = QuotaAmount.add(errors, other.errors)
        tokens = QuotaAmount.add(tokens, other.tokens)
        for i in latency.indices where i < other.latency.count { latency[i] = QuotaAmount.add(latency[i], other.latency[i]) }
    }

    /// The counters by field name, zeros left out.
    public var fields: [(String, Int)] {
        var out: [(String, Int)] = []
        for (name, value) in [("requests", requests), ("hits", hits), ("misses", misses), ("errors", errors), ("tokens", tokens)]
        where value != 0 { out.append((name, value)) }
        for (i, value) in latency.enumerated() where value != 0 { out.append(("lat\(i)", value)) }
        return out
    }

    /// Sets one counter read back from Redis; false for an unknown name. Values are clamped
    /// into `0...QuotaAmount.max` (Redis is outside the gateway).
    public mutating func add(field: Substring, value: Int) -> Bool {
        let v = QuotaAmount.clamp(value)
        switch field {
        case "requests": requests = QuotaAmount.add(requests, v)
        case "hits": hits = QuotaAmount.add(hits, v)
        case "misses": misses = QuotaAmount.add(misses, v)
        case "errors": errors = QuotaAmount.add(errors, v)
        case "tokens": tokens = QuotaAmount.add(tokens, v)
        default:
            guard field.hasPrefix("lat"), let i = Int(field.dropFirst(3)), latency.indices.contains(i) else { return false }
            latency[i] = QuotaAmount.add(latency[i], v)
        }
        return true
    }

    /// Hits ÷ (hits + misses), 0 without either.
    public var hitRate: Double { hits + misses == 0 ? 0 : Double(hits) / Double(hits + misses) }

    /// The latency below which `fraction` of the requests fell, as the upper bound of its
    /// bucket (the last bucket reports its lower bound); 0 without requests.
    public func percentileMs(_ fraction: Double) -> Int {
        let total = latency.reduce(0, +)
        guard total > 0 else { return 0 }
        let rank = Swift.max(1, Int((Double(total) * fraction).rounded(.up)))
        var seen = 0
        for (i, n) in latency.enumerated() {
            seen += n
            if seen >= rank { return i < Self.latencyBoundsMs.count ? Self.latencyBoundsMs[i] : Self.latencyBoundsMs.last! }
        }
        return Self.latencyBoundsMs.last!
    }
}

/// Whose counts a rollup field holds.
public struct RollupCell: Hashable, Sendable {
    public var replica: String
    public var department: String
    /// Empty when no instance answered (refused, cache hit).
    public var instance: String

    public init(replica: String, department: String, instance: String) {
        self.replica = replica
        self.department = department
        self.instance = instance
    }

    public func field(_ counter: String) -> String { "\(replica)\t\(department)\t\(instance)\t\(counter)" }

    /// Reads a field name back: the cell and the counter's name; nil when malformed.
    public static func parse(field: [UInt8]) -> (RollupCell, Substring)? {
        guard field.count <= 1_024, let text = String(validating: field, as: UTF8.self) else { return nil }
        let parts = text.split(separator: "\t", omittingEmptySubsequences: false)
        guard parts.count == 4, !parts[0].isEmpty, !parts[1].isEmpty, !parts[3].isEmpty else { return nil }
        return (RollupCell(replica: String(parts[0]), department: String(parts[1]), instance: String(parts[2])), parts[3])
    }
}

public enum Rollup {
    public static func minuteKey(_ minute: Int64) -> String { "tollgate:rollup:m:\(minute)" }
    public static func hourKey(_ hour: Int64) -> String { "tollgate:rollup:h:\(hour)" }
    /// Minute hashes are read for windows up to this long; longer ones read hour hashes.
    public static let minuteWindowLimitMs: Int64 = 3_600_000
    public static let minuteTTLMs: Int64 = 2 * 3_600_000
    public static let hourTTLMs: Int64 = 8 * 86_400_000
    /// The most fields read from one hash (a registry of that size is logged and cut).
    public static let maxFieldsPerHash = 50_000
}

/// The fleet's rollups over a window, as read back from Redis.
public struct FleetView: Sendable {
    public var fromMs: Int64
    public var toMs: Int64
    /// "minute" or "hour": which hashes were read.
    public var granularity: String
    public var cells: [RollupCell: RollupCounts] = [:]
    /// Fields that were not rollup fields (logged by nobody, shown as a count).
    public var malformedFields = 0

    public init(fromMs: Int64, toMs: Int64, granularity: String) {
        self.fromMs = fromMs
        self.toMs = toMs
        self.granularity = granularity
    }

    /// The counts summed by `group` (e.g. by replica: `\.replica`).
    public func sum(by group: (RollupCell) -> String) -> [(String, RollupCounts)] {
        var out: [String: RollupCounts] = [:]
        for (cell, counts) in cells { out[group(cell), default: RollupCounts()].add(counts) }
        return out.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    public var total: RollupCounts {
        var all = RollupCounts()
        for counts in cells.values { all.add(counts) }
        return all
    }
}
