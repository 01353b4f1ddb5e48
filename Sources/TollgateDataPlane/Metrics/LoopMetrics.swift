import Atomics
import TollgateCore
import NIOCore

/// The labelled counters and latency histograms of one event loop, for `/metrics`.
///
/// Recording costs no lock and no hop: the loop that owns these metrics is the only writer.
/// Histograms are relaxed atomics any thread may read; the per-(department, instance,
/// status, cache) request table is a plain dictionary that only the loop touches, and the
/// control plane reads it by submitting a closure to that loop (`LoopContext.metricsSnapshot`), once
/// per scrape.
public final class LoopMetrics: @unchecked Sendable {
    // @unchecked: `requests` is confined to the owning loop (written by `count` on it, read by
    // `snapshot` on it); everything else is Sendable.
    //
    // No reference back to the loop's context: the data plane, which holds the contexts, asks
    // each one for its snapshot. (A weak one gave the context a side table, and every retain of
    // it the runtime's slow path: see `ExchangeTimers`.)

    /// What a request counter is labelled with.
    public struct RequestKey: Hashable, Sendable {
        public var department: String
        /// Empty when no instance answered (refused, answered from the cache).
        public var instance: String
        public var status: Int
        public var cache: CacheOutcome

        public init(department: String, instance: String, status: Int, cache: CacheOutcome) {
            self.department = department
            self.instance = instance
            self.status = status
            self.cache = cache
        }
    }

    /// Every authenticated request: from the head's arrival to the end of the answer.
    public let requestDuration = LoopHistogram(boundsMicros: LoopHistogram.latencyBoundsMicros)
    /// From writing the request to the answering instance to the end of its answer.
    public let upstreamLatency = LoopHistogram(boundsMicros: LoopHistogram.latencyBoundsMicros)
    /// Streams: from the head's arrival to the first chunk of the answer.
    public let timeToFirstToken = LoopHistogram(boundsMicros: LoopHistogram.latencyBoundsMicros)
    /// From the head's arrival to the request being written to the instance that answered:
    /// the body, authentication, admission, choosing, connecting and failed tries.
    public let gatewayOverhead = LoopHistogram(boundsMicros: LoopHistogram.overheadBoundsMicros)

    private var requests: [RequestKey: Int] = [:]

    init() {}

    /// Counts one ledger row (every authenticated request has exactly one). On the owning loop.
    @inline(__always)
    func count(_ record: UsageRecord) {
        requests[RequestKey(department: record.department, instance: record.instance ?? "", status: record.status,
                            cache: record.cache), default: 0] &+= 1
        requestDuration.observe(micros: Int(record.latencyMs * 1000))
        if let ttft = record.ttftMs { timeToFirstToken.observe(micros: Int(ttft * 1000)) }
    }

    /// The timings of a forwarded request. On the owning loop.
    @inline(__always)
    func forwarded(received: NIODeadline, sent: NIODeadline?, firstByte: NIODeadline?, end: NIODeadline) {
        guard let sent else { return }
        gatewayOverhead.observe(micros: Int((sent - received).nanoseconds / 1000))
        if firstByte != nil { upstreamLatency.observe(micros: Int((end - sent).nanoseconds / 1000)) }
    }

    /// The figures recorded so far, with the loop's in-flight counts and queues. On the
    /// owning loop (`LoopContext.metricsSnapshot`).
    func snapshot(inFlight: [Int], queues: [QueueFigures.Key: QueueFigures]) -> LoopMetricsSnapshot {
        LoopMetricsSnapshot(
            requests: requests, inFlight: inFlight, queues: queues,
            requestDuration: requestDuration.snapshot(), upstreamLatency: upstreamLatency.snapshot(),
            timeToFirstToken: timeToFirstToken.snapshot(), gatewayOverhead: gatewayOverhead.snapshot())
    }
}

/// One loop's metrics at one moment.
struct LoopMetricsSnapshot: Sendable {
    var requests: [LoopMetrics.RequestKey: Int]
    var inFlight: [Int]
    var queues: [QueueFigures.Key: QueueFigures]
    var requestDuration: HistogramSnapshot
    var upstreamLatency: HistogramSnapshot
    var timeToFirstToken: HistogramSnapshot
    var gatewayOverhead: HistogramSnapshot
}
