import Atomics
import Foundation
import Logging
import NIOCore
import TollgateCore
import TollgateRedis

/// Shares one limit among the replicas through Redis without putting Redis on any request's
/// path (DESIGN: "a replica may lease a slice of a quota").
///
/// Admission decides on this process's counters (one compare-and-swap) against the slices it
/// holds (`QuotaCounter.granted`, plus one slice of credit). Every `quotas.sync_interval`, and
/// at once when admission finds a slice running low (`QuotaLeaseSignal.wake`, one hop per
/// slice), a round on the health monitor's loop:
/// - takes a new slice with `QuotaLease.script` (atomic in Redis, capped at what is left and
///   shrinking with it), charges what was used past the slices held, and gives back what an
///   idle replica holds (`QuotaLeaseState.decide`);
/// - adds this replica's use since the last round to the shared use counter
///   (`SharedQuota.key`) and learns the others' use from its total (for `x-ratelimit-remaining-*`,
///   the admin page and `/metrics`; admission does not need it).
///
/// When Redis cannot answer, rounds are skipped (each counted in
/// `tollgate_quota_fallbacks_total`) and admission goes on against the slices held; after
/// `fallbackAfterMs` without an answer it falls back to this replica's own counters against
/// the whole limit, less what the others were last known to use (logged, and
/// `tollgate_quota_leasing` 0). The grace keeps a blip — a command timeout on a busy machine
/// resets the connection for a few milliseconds — from turning the limit into up to
/// limit × replicas. The use counted meanwhile is added when Redis returns, and charged to the
/// lease counter as debt.
final class QuotaSync {
    private struct Reported {
        var window: Int64
        /// The local use already added to the shared use counter.
        var base: Int
    }

    private let monitor: HealthMonitor
    private let redis: RedisConnection
    private let counters: LoopCounters
    private let logger: Logger
    private var reported: [String: Reported] = [:]
    private var leases: [String: QuotaLeaseState] = [:]
    private var calendar = QuotaCalendar(timeZone: TimeZone(identifier: "UTC")!)
    private var inFlight = false
    /// A wake arrived while a round was in flight: run another when it ends.
    private var again = false
    private var down = false
    /// When rounds started failing (wall ms); nil while Redis answers.
    private var failingSinceMs: Int64?
    /// How long Redis may fail to answer before admission falls back to the replica's own counters.
    static let fallbackAfterMs: Int64 = 1_000
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
        let loop = monitor.eventLoop
        let box = NIOLoopBound(self, eventLoop: loop)
        monitor.store.load().quotas.leases.install { loop.execute { box.value.woken() } }
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
        let signal = monitor.store.load().quotas.leases
        signal.install(waker: nil)
        signal.setLeasing(false)
    }

    private func woken() {
        guard !stopped else { return }
        if inFlight { again = true } else { round(tick: false) }
    }

    /// `tick`: the periodic round, which also publishes the use; a round admission asked for
    /// (`woken`) only takes slices.
    private func round(tick: Bool = true) {
        guard !inFlight else { return }
        let state = monitor.store.load()
        let book = state.quotas
        let woken = book.leases.takeWake()
        let nowMs = wallClock()
        let now = calendar.current(atMs: nowMs, in: book.settings.timeZone)
        guard redis.isAvailable else { return skipped(nil, book: book) }
        let policy = book.settings.lease
        var futures: [EventLoopFuture<Void>] = []
        for (d, name) in book.names.enumerated() {
            let limits = book.departments[d].limits
            for (meter, limit) in SharedQuota.meters(limits) {
                let window = now.index(meter.window)
                let counter = book.departments[d].counters[meter.rawValue]
                let id = "\(name)|\(meter.rawValue)"
                let ttl = TimeAmount.seconds(max(1, (now.end(meter.window) - nowMs) / 1000 + 120))

                // The lease first.
                var lease = leases[id] ?? QuotaLeaseState(window: window)
                let held = counter.granted(window: window)
                let action = lease.decide(window: window, used: counter.used(window: window), granted: held,
                                          limit: limit, policy: policy, woken: woken, wanted: counter.takeWanted())
                leases[id] = lease
                switch action {
                case .none:
                    break
                case .take(let want, let debt):
                    // Debt admitted on credit (nothing held yet) or while Redis was away is held
                    // from now on; debt from racing reservations is only charged.
                    let fold = held == 0 || down
                    let leaseKey = QuotaLease.key(department: name, meter: meter, window: window)
                    futures.append(runScript(key: leaseKey, limit: limit, want: want, delta: debt, ttl: ttl).map { reply in
                        guard let (granted, _) = reply else {
                            self.logger.warning("Redis answered the quota lease script with something else; ignored",
                                                metadata: ["department": "\(name)", "meter": "\(meter.headerName)"])
                            return
                        }
                        guard self.leases[id]?.window == window else { return }
                        let add = self.leases[id]?.took(granted: granted, debt: debt, wanted: want, fold: fold) ?? 0
                        counter.addGrant(window: window, add)
                        if want > 0 { counter.setExhausted(window: window, granted == 0) }
                    })
                case .giveBack(let amount):
                    // Given up locally first: admission never counts on what is being returned.
                    counter.addGrant(window: window, -amount)
                    let leaseKey = QuotaLease.key(department: name, meter: meter, window: window)
                    futures.append(runScript(key: leaseKey, limit: limit, want: 0, delta: -amount, ttl: ttl).map { _ in })
                }

                // Then the use, for everyone's view of it (every tick).
                guard tick else { continue }
                let current = counter.used(window: window)
                var entry = reported[id] ?? Reported(window: window, base: 0)
                if entry.window != window { entry = Reported(window: window, base: 0) }
                let delta = current - entry.base
                let key = SharedQuota.key(department: name, meter: meter, window: window)
                reported[id] = entry
                futures.append(redis.incrementBy(key, Int64(delta)).map { reply in
                    // Redis is outside the gateway: its total is clamped like any amount.
                    let total = QuotaAmount.clamp(Int(truncatingIfNeeded: reply))
                    if self.reported[id]?.window == window { self.reported[id]?.base = current }
                    counter.setOthersUsed(window: window, max(0, total - current))
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
                book.leases.setLeasing(true)
                failingSinceMs = nil
                if down {
                    down = false
                    logger.notice("Redis is back: quotas are leased from the shared counters again")
                }
            case .failure(let error):
                skipped(error, book: book)
            }
            if again {
                again = false
                round(tick: false)
            }
        }
    }

    /// Runs the lease script; nil when the reply is not two integers in range.
    private func runScript(key: String, limit: Int, want: Int, delta: Int, ttl: TimeAmount) -> EventLoopFuture<(Int, Int)?> {
        redis.eval(QuotaLease.script, keys: [key], arguments: [
            String(limit), String(want), String(delta), String(max(1, ttl.nanoseconds / 1_000_000)),
            String(QuotaLeasePolicy.remainderDivisor),
        ]).map { reply -> (Int, Int)? in
            guard let parts = reply.array, parts.count == 2, let granted = parts[0].int, let taken = parts[1].int,
                  granted >= 0, granted <= Int64(QuotaAmount.max), taken >= 0 else { return nil }
            return (min(Int(granted), want), QuotaAmount.clamp(Int(truncatingIfNeeded: taken)))
        }
    }

    private func skipped(_ error: (any Error)?, book: QuotaBook) {
        counters.quotaFallbacks.wrappingIncrement(ordering: .relaxed)
        let now = wallClock()
        let since = failingSinceMs ?? now
        failingSinceMs = since
        // Debt admitted from here on is folded into what is held when Redis answers again.
        down = true
        guard book.leases.isLeasing, now - since >= Self.fallbackAfterMs else { return }
        book.leases.setLeasing(false)
        logger.warning("Redis unavailable: quotas are counted on this replica's own counters until it returns", metadata: [
            "error": "\(error.map { "\($0)" } ?? "not connected")",
            "unanswered_ms": "\(now - since)",
        ])
    }
}
