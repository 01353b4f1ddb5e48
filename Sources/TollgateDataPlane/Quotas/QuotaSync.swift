import Atomics
import Foundation
import Logging
import NIOCore
import TollgateCore
import TollgateRedis

/// Keeps the replicas' quota counters in step through Redis without putting Redis on any
/// request's path (DESIGN: "to keep Redis off the per-request path").
///
/// Admission always decides on this process's counters (one compare-and-swap). Every
/// `quotas.sync_interval` this task adds what this replica used since the last round to the
/// shared key (INCRBY, then EXPIRE past the window's end) and sets the local counter to the
/// shared total plus whatever was admitted while the answer travelled. So every replica sees
/// the others' use within one interval: the limit is the limit, overshot by at most what the
/// replicas admit in one interval. When Redis cannot answer, the round is skipped (logged once,
/// counted); counting goes on locally and the backlog is added when Redis returns.
///
/// With Redis the shared keys are what survives a gateway restart (the local counters start at
/// zero and learn the totals in the first round); without Redis the counters are seeded from
/// the ledger instead.
final class QuotaSync {
    private struct Synced {
        var window: Int64
        /// The local counter's value that corresponds to the shared total of the last round.
        var base: Int
    }

    private let monitor: HealthMonitor
    private let redis: RedisConnection
    private let counters: LoopCounters
    private let logger: Logger
    private var synced: [String: Synced] = [:]
    private var calendar = QuotaCalendar(timeZone: TimeZone(identifier: "UTC")!)
    private var inFlight = false
    private var down = false
    private var task: Scheduled<Void>?
    private var interval: TimeAmount = .milliseconds(100)
    private var stopped = false

    private let wallClock: WallClock

    init(monitor: HealthMonitor, redis: RedisConnection, counters: LoopCounters, logger: Logger,
         wallClock: @escaping WallClock = wallClockMs) {
        self.monitor = monitor
        self.wallClock = wallClock
        self.redis = redis
        self.counters = counters
        self.logger = logger
    }

    /// Runs on the health monitor's event loop, which owns `redis`.
    func start(interval: Duration) {
        self.interval = .nanoseconds(interval.nanoseconds)
        scheduleNext()
    }

    private func scheduleNext() {
        guard !stopped else { return }
        task = monitor.eventLoop.assumeIsolated().scheduleTask(in: interval) { [self] in
            round()
            scheduleNext()
        }
    }

    func stop() {
        stopped = true
        task?.cancel()
        task = nil
    }

    private func round() {
        guard !inFlight else { return }
        let state = monitor.store.load()
        let book = state.quotas
        let nowMs = wallClock()
        let now = calendar.current(atMs: nowMs, in: book.settings.timeZone)
        var futures: [EventLoopFuture<Void>] = []
        guard redis.isAvailable else { return skipped(nil) }
        for (d, name) in book.names.enumerated() {
            let limits = book.departments[d].limits
            for (meter, _) in SharedQuota.meters(limits) {
                let window = now.index(meter.window)
                let counter = book.departments[d].counters[meter.rawValue]
                let id = "\(name)|\(meter.rawValue)"
                let current = counter.used(window: window)
                var entry = synced[id] ?? Synced(window: window, base: 0)
                if entry.window != window { entry = Synced(window: window, base: 0) }
                let delta = current - entry.base
                let key = SharedQuota.key(department: name, meter: meter, window: window)
                let ttl = TimeAmount.seconds(max(1, (now.end(meter.window) - nowMs) / 1000 + 120))
                let sent = current
                synced[id] = entry
                futures.append(redis.incrementBy(key, Int64(delta)).map { reply in
                    // Redis is outside the gateway: its total is clamped like any amount.
                    let total = QuotaAmount.clamp(Int(truncatingIfNeeded: reply))
                    // Local = shared total + what was admitted here while the answer travelled.
                    counter.adjust(window: window, by: total - sent)
                    if self.synced[id]?.window == window { self.synced[id]?.base = total }
                    _ = self.redis.expire(key, in: ttl)
                })
            }
        }
        guard !futures.isEmpty else { return }
        inFlight = true
        EventLoopFuture.andAllSucceed(futures, on: monitor.eventLoop).assumeIsolated().whenComplete { [self] result in
            inFlight = false
            switch result {
            case .success:
                if down {
                    down = false
                    logger.notice("Redis is back: quota counters are shared again")
                }
            case .failure(let error):
                skipped(error)
            }
        }
    }

    private func skipped(_ error: (any Error)?) {
        counters.quotaFallbacks.wrappingIncrement(ordering: .relaxed)
        guard !down else { return }
        down = true
        logger.warning("Redis unavailable: quota counters are this replica's own until it returns", metadata: [
            "error": "\(error.map { "\($0)" } ?? "not connected")",
        ])
    }
}
