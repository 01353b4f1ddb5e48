import Atomics
import NIOCore
import TollgateCore
import TollgateRedis

/// Every loop's metrics summed, with the snapshot of the routing table they refer to.
public struct MetricsSnapshot: Sendable {
    /// The state the in-flight counts are indexed by.
    public let state: GatewayState
    /// Authenticated requests by department, instance, status and cache outcome.
    public var requests: [LoopMetrics.RequestKey: Int] = [:]
    /// In-flight requests per instance, indexed like `state.table.instances`.
    public var inFlight: [Int]
    /// The waiting lines of every loop, per lane and department.
    public var queues: [QueueFigures.Key: QueueFigures] = [:]
    public var requestDuration = HistogramSnapshot(boundsMicros: LoopHistogram.latencyBoundsMicros,
                                                   counts: Array(repeating: 0, count: LoopHistogram.latencyBoundsMicros.count + 1), sumMicros: 0)
    public var upstreamLatency = HistogramSnapshot(boundsMicros: LoopHistogram.latencyBoundsMicros,
                                                   counts: Array(repeating: 0, count: LoopHistogram.latencyBoundsMicros.count + 1), sumMicros: 0)
    public var timeToFirstToken = HistogramSnapshot(boundsMicros: LoopHistogram.latencyBoundsMicros,
                                                    counts: Array(repeating: 0, count: LoopHistogram.latencyBoundsMicros.count + 1), sumMicros: 0)
    public var gatewayOverhead = HistogramSnapshot(boundsMicros: LoopHistogram.overheadBoundsMicros,
                                                   counts: Array(repeating: 0, count: LoopHistogram.overheadBoundsMicros.count + 1), sumMicros: 0)
    /// `LoopCounters`, summed.
    public var requestHeads = 0
    public var upstreamRequests = 0
    public var retries = 0
    public var retriesDenied = 0
    public var upstreamFailures = 0
    public var clientErrors = 0
    public var noInstance = 0
    public var quotaRejections = 0
    public var quotaFallbacks = 0
    public var activeConnections = 0
    public var connectionsRefused = 0
    public var activeRequests = 0
    /// Redis, when the gateway has it (`attachRedis`).
    public var redisConfigured = false
    public var redisConnections = 0
    public var redisAvailableConnections = 0
    public var redisOutages = 0

    init(state: GatewayState) {
        self.state = state
        self.inFlight = Array(repeating: 0, count: state.table.instances.count)
    }

    mutating func add(_ loop: LoopMetricsSnapshot) {
        requests.merge(loop.requests, uniquingKeysWith: +)
        for (key, figures) in loop.queues { queues[key, default: QueueFigures()].add(figures) }
        if loop.inFlight.count == inFlight.count {
            for i in inFlight.indices { inFlight[i] += loop.inFlight[i] }
        }
        requestDuration.add(loop.requestDuration)
        upstreamLatency.add(loop.upstreamLatency)
        timeToFirstToken.add(loop.timeToFirstToken)
        gatewayOverhead.add(loop.gatewayOverhead)
    }
}

extension DataPlane {
    /// Reads every loop's metrics: one hop to each loop (never from an event loop of this
    /// data plane, which would wait on itself), counters summed.
    public func metricsSnapshot() async -> MetricsSnapshot {
        let state = self.state
        var snapshot = MetricsSnapshot(state: state)
        for c in counters {
            snapshot.requestHeads += c.requests.load(ordering: .relaxed)
            snapshot.upstreamRequests += c.upstreamRequests.load(ordering: .relaxed)
            snapshot.retries += c.retries.load(ordering: .relaxed)
            snapshot.retriesDenied += c.retriesDenied.load(ordering: .relaxed)
            snapshot.upstreamFailures += c.upstreamFailures.load(ordering: .relaxed)
            snapshot.clientErrors += c.clientErrors.load(ordering: .relaxed)
            snapshot.noInstance += c.noInstance.load(ordering: .relaxed)
            snapshot.quotaRejections += c.quotaRejections.load(ordering: .relaxed)
            snapshot.quotaFallbacks += c.quotaFallbacks.load(ordering: .relaxed)
            snapshot.activeConnections += c.activeConnections.load(ordering: .relaxed)
            snapshot.connectionsRefused += c.connectionsRefused.load(ordering: .relaxed)
            snapshot.activeRequests += c.activeRequests.load(ordering: .relaxed)
        }
        if let redis {
            snapshot.redisConfigured = true
            snapshot.redisConnections = redis.connectionCount
            snapshot.redisAvailableConnections = redis.availableConnections
            snapshot.redisOutages = redis.outages
        }
        let futures = contexts.values.map { bound in bound.eventLoop.submit { bound.value.metricsSnapshot(state: state) } }
        for future in futures {
            if let loop = try? await future.get() { snapshot.add(loop) }
        }
        return snapshot
    }
}
