import Atomics

/// A fixed-bucket histogram written by one event loop only.
///
/// Each bucket is a `ManagedAtomic<Int>` that its loop updates with a relaxed load and store
/// (one writer, so no read-modify-write instruction and no contention); any thread may read
/// it. Observations are whole microseconds. Bucket `i` counts observations `<= bounds[i]`;
/// the last bucket counts the rest (`+Inf`).
public final class LoopHistogram: Sendable {
    /// Upper bounds of the buckets, in microseconds, ascending.
    public let boundsMicros: [Int]
    private let buckets: [ManagedAtomic<Int>]
    private let sumMicros = ManagedAtomic<Int>(0)

    public init(boundsMicros: [Int]) {
        precondition(zip(boundsMicros, boundsMicros.dropFirst()).allSatisfy { $0 < $1 }, "bounds must ascend")
        self.boundsMicros = boundsMicros
        self.buckets = (0...boundsMicros.count).map { _ in ManagedAtomic<Int>(0) }
    }

    /// Records one observation. Only the owning loop may call this.
    @inline(__always)
    public func observe(micros: Int) {
        let value = max(0, micros)
        var i = 0
        while i < boundsMicros.count && value > boundsMicros[i] { i += 1 }
        let bucket = buckets[i]
        bucket.store(bucket.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        sumMicros.store(sumMicros.load(ordering: .relaxed) &+ value, ordering: .relaxed)
    }

    /// The counts so far (per bucket, not cumulative) and their sum. The count is the sum of
    /// the buckets, so `_count` and the `+Inf` bucket always agree.
    public func snapshot() -> HistogramSnapshot {
        HistogramSnapshot(boundsMicros: boundsMicros, counts: buckets.map { $0.load(ordering: .relaxed) },
                          sumMicros: sumMicros.load(ordering: .relaxed))
    }

    /// Request latencies: 5 ms to 2 minutes.
    public static let latencyBoundsMicros = [5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
                                             1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000, 120_000_000]
    /// The gateway's own time: 50 µs to 1 s.
    public static let overheadBoundsMicros = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000,
                                              100_000, 250_000, 1_000_000]
}

/// A histogram's figures at one moment, summed over loops with `add`.
public struct HistogramSnapshot: Sendable, Equatable {
    public var boundsMicros: [Int]
    /// Per bucket, not cumulative; one more than `boundsMicros` (the last is `+Inf`).
    public var counts: [Int]
    public var sumMicros: Int

    public init(boundsMicros: [Int], counts: [Int], sumMicros: Int) {
        self.boundsMicros = boundsMicros
        self.counts = counts
        self.sumMicros = sumMicros
    }

    public var count: Int { counts.reduce(0, +) }

    /// Adds another loop's figures (same bounds).
    public mutating func add(_ other: HistogramSnapshot) {
        precondition(other.boundsMicros == boundsMicros)
        for i in counts.indices { counts[i] += other.counts[i] }
        sumMicros += other.sumMicros
    }

    /// Cumulative counts for Prometheus: (upper bound in seconds or nil for +Inf, count).
    public var cumulative: [(le: Double?, count: Int)] {
        var running = 0
        return counts.indices.map { i in
            running += counts[i]
            return (i < boundsMicros.count ? Double(boundsMicros[i]) / 1e6 : nil, running)
        }
    }
}
