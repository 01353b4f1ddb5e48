import Atomics
import TollgateCore
import NIOConcurrencyHelpers
import NIOCore

/// The labelled counters and latency histograms of one event loop, for `/metrics`.
///
/// Recording costs no lock and no hop: the loop that owns these metrics is the only writer.
/// Histograms are relaxed atomics any thread may read; the per-(department, instance,
/// status, cache) request table is a plain dictionary that only the loop touches, and the
/// control plane reads it by submitting a closure to that loop (`snapshot(state:)`), once
/// per scrape.
public final class LoopMetrics: @unchecked Sendable {
    // @unchecked: `requests` and `context` are confined to the owning loop (written by
    // `count`/`attach` on it, read by `snapshot` on it); everything else is Sendable.

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
    private weak var context: LoopContext?
    /// Set once, on the loop, before the data plane is running; read per scrape.
    private let owner = NIOLockedValueBox<(any EventLoop)?>(nil)

    init() {}

    /// Binds these metrics to the loop context that records into them. On that loop.
    func attach(_ context: LoopContext) {
        context.eventLoop.preconditionInEventLoop()
        self.context = context
        owner.withLockedValue { $0 = context.eventLoop }
    }

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

    /// This loop's figures, read on the loop; in-flight counts are indexed like
    /// `state.table.instances`. Nil before the loop is attached.
    func snapshot(state: GatewayState) -> EventLoopFuture<LoopMetricsSnapshot>? {
        guard let loop = owner.withLockedValue({ $0 }) else { return nil }
        return loop.submit {
            var inFlight = Array(repeating: 0, count: state.table.instances.count)
            var queues: [QueueFigures.Key: QueueFigures] = [:]
            if let context = self.context {
                queues = context.waitingLine.snapshot()
                // Bring an idle loop up to the table (as its next request would); never back
                // to an older one, should a reload have happened since `state` was read.
                if context.generation < state.table.generation { context.adopt(state) }
                if context.generation == state.table.generation {
                    inFlight = context.inFlight
                }
            }
            return LoopMetricsSnapshot(
                requests: self.requests, inFlight: inFlight, queues: queues,
                requestDuration: self.requestDuration.snapshot(), upstreamLatency: self.upstreamLatency.snapshot(),
                timeToFirstToken: self.timeToFirstToken.snapshot(), gatewayOverhead: self.gatewayOverhead.snapshot())
        }
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
