import Atomics
import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import TollgateControlPlane
import TollgateCore
import TollgateDataPlane
import TollgateLedger
import TollgateRedis

/// What makes several replicas on one Redis one gateway (README, "Running several replicas"):
///
/// - **Keys**: the key registry (digest, prefix, department, label, times; never a key) is a
///   Redis hash every replica merges with its own ledger (`KeyRegistryPlan`): at start, on
///   every `keys` event, after every (re)subscription, and every `keyPollInterval` as a
///   backstop (which also publishes keys made by `tollgate keys` on this replica's ledger).
///   Each replica keeps serving from its in-memory table and its SQLite copy when Redis is gone.
/// - **Events** on the pub/sub channel `FleetEvent.channel`: keys changed, cache purges,
///   reloads, logouts. A malformed message is logged, counted and dropped.
/// - **Rollups**: per-minute counts of this replica's requests (`FleetRollups`), for the fleet
///   view of the admin page.
///
/// Blocking work (SQLite, a reload, waiting on Redis) runs on `queue`, never on an event loop.
public final class Fleet: Sendable {
    /// Names this process in its messages, so that it skips its own.
    public let origin: String
    public let replica: String
    let dataPlane: DataPlane
    let ledger: Ledger?
    let sessions: AdminSessions
    let redis: RedisClientGroup
    let loop: any EventLoop
    let logger: Logger
    let rollups: FleetRollups
    let queue = DispatchQueue(label: "tollgate-fleet")
    private let subscriber: NIOLoopBoundBox<RedisSubscriber?>
    private let timers = NIOLockedValueBox<[RepeatedTask]>([])
    private let reloadHook = Hook<Void>()
    private let stopped = NIOLockedValueBox(false)

    /// Registry syncs are also run this often without an event (keys made by the command line
    /// on this replica's ledger are published by it).
    static let keyPollInterval = TimeAmount.seconds(1)
    /// Rollups are published this often.
    static let rollupInterval = TimeAmount.seconds(2)

    init(dataPlane: DataPlane, ledger: Ledger?, sessions: AdminSessions, redis: RedisClientGroup, replica: String,
         logger: Logger) {
        self.origin = UUID().uuidString.lowercased()
        self.replica = replica
        self.dataPlane = dataPlane
        self.ledger = ledger
        self.sessions = sessions
        self.redis = redis
        self.loop = dataPlane.monitor.eventLoop
        var logger = logger
        logger[metadataKey: "component"] = "fleet"
        self.logger = logger
        self.rollups = FleetRollups(replica: replica, counters: dataPlane.fleetCounters)
        self.subscriber = NIOLoopBoundBox.makeEmptyBox(valueType: RedisSubscriber.self, eventLoop: dataPlane.monitor.eventLoop)
    }

    var counters: FleetCounters { dataPlane.fleetCounters }

    /// What a `reload` event runs (the gateway's reload).
    func onReload(_ reload: @escaping @Sendable () -> Void) {
        reloadHook.install { _ in reload() }
    }

    /// The admin API's view of the fleet.
    var hooks: FleetHooks {
        FleetHooks(replica: replica, publish: { [self] in publish($0) }, keysChanged: { [self] in keysChangedHere() },
                   view: { [self] in view(fromMs: $0, toMs: $1) })
    }

    /// Subscribes, starts the timers, and taps the usage rows for rollups.
    func start() {
        let rollups = self.rollups
        dataPlane.usageSink?.observe { records in rollups.add(records) }
        sessions.onLogout { [self] digest, expiresS in
            queue.async { self.shareLogout(digest: digest, expiresS: expiresS) }
        }
        let box = subscriber
        let configuration = redis.configuration
        let logger = self.logger
        try? loop.submit { [self] in
            let s = RedisSubscriber(configuration: configuration, channels: [FleetEvent.channel], eventLoop: loop, logger: logger,
                                    onSubscribed: { [self] in
                                        counters.subscribed.store(1, ordering: .relaxed)
                                        queue.async { self.resync() }
                                    },
                                    onLost: { [self] in counters.subscribed.store(0, ordering: .relaxed) },
                                    onMessage: { [self] _, payload in received(payload) })
            box.value = s
            s.start()
        }.wait()
        schedule(every: Self.keyPollInterval) { [self] in syncKeys() }
        schedule(every: Self.rollupInterval) { [self] in publishRollups() }
    }

    /// Before the data plane's loops stop (they carry every Redis command): timers off, the
    /// subscription closed, what is counted published, then nothing more is sent.
    func stop() async {
        for timer in timers.withLockedValue({ $0 }) { timer.cancel() }
        let box = subscriber
        try? await loop.flatSubmit { box.value?.close() ?? self.loop.makeSucceededVoidFuture() }.get()
        // The queue is serial: the jobs queued before this one run first, while the loops live.
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            queue.async {
                self.publishRollups()
                self.stopped.withLockedValue { $0 = true }
                done.resume()
            }
        }
    }

    /// Runs `work` on `queue` every `interval` (the timer on the loop only hands it over).
    private func schedule(every interval: TimeAmount, _ work: @escaping @Sendable () -> Void) {
        let queue = self.queue
        let task = loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in queue.async(execute: work) }
        timers.withLockedValue { $0.append(task) }
    }

    // MARK: - Events

    /// Announces `event` to the other replicas (fire and forget: a replica that misses it
    /// catches up at its next resync or poll).
    public func publish(_ event: FleetEvent) {
        guard !stopped.withLockedValue({ $0 }) else { return }
        let message = FleetMessage(origin: origin, event: event).encoded
        let connection = redis
        let loop = self.loop
        let counters = self.counters
        let logger = self.logger
        loop.execute {
            connection.connection(for: loop).send(command: ["PUBLISH", FleetEvent.channel, message]).whenComplete { result in
                switch result {
                case .success: counters.eventsPublished.wrappingIncrement(ordering: .relaxed)
                case .failure(let error):
                    logger.warning("a fleet event could not be published; the other replicas catch up at their next sync",
                                   metadata: ["event": "\(message)", "error": "\(error)"])
                }
            }
        }
    }

    /// A message from the channel, on the subscriber's loop.
    private func received(_ payload: [UInt8]) {
        guard let message = FleetMessage.parse(payload) else {
            counters.eventsDropped.wrappingIncrement(ordering: .relaxed)
            logger.warning("malformed fleet message dropped", metadata: [
                "bytes": "\(payload.count)", "start": "\(String(decoding: payload.prefix(80), as: UTF8.self))"])
            return
        }
        guard message.origin != origin else { return }
        counters.eventsReceived.wrappingIncrement(ordering: .relaxed)
        switch message.event {
        case .keysChanged:
            queue.async { self.syncKeys() }
        case .purge(let department):
            let dataPlane = self.dataPlane
            logger.notice("cache purge from another replica", metadata: ["department": "\(department ?? "*")"])
            Task { await dataPlane.purgeLocalCaches(department: department) }
        case .reload:
            logger.notice("reload asked by another replica")
            queue.async { self.reloadHook.call(()) }
        case .logout(let digest):
            // The exact end is in the shared list (read at resync); until then the longest.
            sessions.revoke(digest: digest, expiresS: Int64(Date().timeIntervalSince1970) + sessions.lifetimeSeconds)
        }
    }

    /// After every (re)subscription: what was announced while unsubscribed is read again.
    private func resync() {
        syncKeys()
        syncRevokedSessions()
    }

    // MARK: - Keys

    /// Merges the registry in Redis with this replica's ledger, publishes what Redis lacks,
    /// and puts what changed in force. On `queue`.
    func syncKeys() {
        guard let ledger, !stopped.withLockedValue({ $0 }) else { return }
        counters.keySyncs.wrappingIncrement(ordering: .relaxed)
        do {
            let remote = try readRegistry()
            let local = try ledger.keys.registry()
            let plan = KeyRegistryPlan(local: local, remote: remote)
            if !plan.conflicts.isEmpty {
                counters.keyRecordsRefused.wrappingIncrement(by: plan.conflicts.count, ordering: .relaxed)
                logger.error("keys with the same prefix but different digests in Redis and in this ledger; left alone",
                             metadata: ["prefixes": "\(plan.conflicts.joined(separator: ","))"])
            }
            if try ledger.keys.merge(insert: plan.insertLocally, revoke: plan.revokeLocally) {
                logger.notice("keys from other replicas merged into the ledger", metadata: [
                    "added": "\(plan.insertLocally.count)", "revoked": "\(plan.revokeLocally.count)"])
                try ledger.refreshKeys(into: dataPlane)?.wait()
            }
            if !plan.publish.isEmpty {
                var command = ["HSET", FleetKeyRecord.registryKey]
                for record in plan.publish {
                    command.append(record.prefix)
                    command.append(String(decoding: record.encoded, as: UTF8.self))
                }
                _ = try send(command)
                publish(.keysChanged)
            }
        } catch {
            counters.keySyncFailures.wrappingIncrement(ordering: .relaxed)
            logger.debug("key registry sync skipped", metadata: ["error": "\(error)"])
        }
    }

    /// Called by the admin API after it created or revoked a key: shares it before answering.
    public func keysChangedHere() {
        queue.sync { syncKeys() }
    }

    private func readRegistry() throws -> [FleetKeyRecord] {
        let count = try send(["HLEN", FleetKeyRecord.registryKey]).int ?? 0
        guard count <= Int64(FleetKeyRecord.maxRecords) else {
            logger.error("the key registry in Redis is larger than this gateway reads; not merged",
                         metadata: ["entries": "\(count)", "limit": "\(FleetKeyRecord.maxRecords)"])
            throw RedisError.protocolError("key registry too large")
        }
        guard let pairs = try send(["HGETALL", FleetKeyRecord.registryKey]).array else { return [] }
        var records: [FleetKeyRecord] = []
        var refused = 0
        var i = 0
        while i + 1 < pairs.count {
            if let field = pairs[i].bytes, let value = pairs[i + 1].bytes, let record = FleetKeyRecord.parse(field: field, value: value) {
                records.append(record)
            } else {
                refused += 1
            }
            i += 2
        }
        if refused > 0 {
            counters.keyRecordsRefused.wrappingIncrement(by: refused, ordering: .relaxed)
            logger.warning("key registry entries out of range ignored", metadata: ["entries": "\(refused)"])
        }
        return records
    }

    // MARK: - Sessions

    static let revokedSessionsKey = "tollgate:admin:revoked-sessions"

    private func shareLogout(digest: String, expiresS: Int64) {
        do {
            _ = try send(["ZADD", Self.revokedSessionsKey, String(expiresS), digest])
            _ = try send(["ZREMRANGEBYSCORE", Self.revokedSessionsKey, "-inf", String(Int64(Date().timeIntervalSince1970))])
        } catch {
            logger.warning("a logout could not be stored in Redis; shared again when it returns", metadata: ["error": "\(error)"])
        }
        publish(.logout(sessionDigest: digest))
    }

    /// Both ways: the revocations in Redis are applied here, this replica's are added there.
    private func syncRevokedSessions() {
        let now = Int64(Date().timeIntervalSince1970)
        do {
            let reply = try send(["ZRANGEBYSCORE", Self.revokedSessionsKey, String(now), "+inf", "WITHSCORES", "LIMIT", "0",
                                  String(sessions.capacity)])
            let items = reply.array ?? []
            var i = 0
            while i + 1 < items.count {
                if let digest = items[i].string, digest.utf8.count == 64, let end = items[i + 1].int, end > now, end < now + 86_400 * 366 {
                    sessions.revoke(digest: digest, expiresS: end)
                }
                i += 2
            }
            let mine = sessions.revocations
            if !mine.isEmpty {
                var command = ["ZADD", Self.revokedSessionsKey]
                for (digest, end) in mine { command += [String(end), digest] }
                _ = try send(command)
            }
        } catch {
            logger.debug("revoked admin sessions not synced", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - Rollups

    private func publishRollups() {
        let batch = rollups.take()
        guard !batch.isEmpty else { return }
        var commands: [[String]] = []
        var touched = Set<String>()
        for (key, counts) in batch {
            let minuteKey = Rollup.minuteKey(key.minute)
            let hourKey = Rollup.hourKey(key.minute / 60)
            for (name, value) in counts.fields {
                let field = key.cell.field(name)
                commands.append(["HINCRBY", minuteKey, field, String(value)])
                commands.append(["HINCRBY", hourKey, field, String(value)])
            }
            if touched.insert(minuteKey).inserted { commands.append(["PEXPIRE", minuteKey, String(Rollup.minuteTTLMs)]) }
            if touched.insert(hourKey).inserted { commands.append(["PEXPIRE", hourKey, String(Rollup.hourTTLMs)]) }
        }
        commands.append(["ZADD", Self.replicasKey, String(Int64(Date().timeIntervalSince1970 * 1000)), replica])
        do {
            _ = try sendPipelined(commands)
        } catch {
            // HINCRBY is not idempotent: a batch that failed part-way may count twice when
            // put back. Accepted for a summary view; the ledger is exact.
            counters.rollupPublishFailures.wrappingIncrement(ordering: .relaxed)
            rollups.putBack(batch)
        }
    }

    /// The fleet's rollups over [fromMs, toMs): minute hashes for windows up to an hour, hour
    /// hashes beyond (whole hours: the edges may include up to an hour more). Nil when Redis
    /// does not answer. Blocking: from a thread pool.
    public func view(fromMs: Int64, toMs: Int64) -> FleetView? {
        let byMinute = toMs - fromMs <= Rollup.minuteWindowLimitMs
        var keys: [String] = []
        if byMinute {
            var minute = fromMs / 60_000
            while minute * 60_000 < toMs { keys.append(Rollup.minuteKey(minute)); minute += 1 }
        } else {
            var hour = fromMs / 3_600_000
            while hour * 3_600_000 < toMs { keys.append(Rollup.hourKey(hour)); hour += 1 }
        }
        guard keys.count <= 400, let replies = try? sendPipelined(keys.map { ["HGETALL", $0] }) else { return nil }
        var view = FleetView(fromMs: fromMs, toMs: toMs, granularity: byMinute ? "minute" : "hour")
        for reply in replies {
            let items = reply.array ?? []
            var i = 0
            var fields = 0
            while i + 1 < items.count, fields < Rollup.maxFieldsPerHash {
                defer { i += 2; fields += 1 }
                guard let name = items[i].bytes, let (cell, counter) = RollupCell.parse(field: name),
                      let value = items[i + 1].int, value >= 0 else {
                    view.malformedFields += 1
                    continue
                }
                var counts = view.cells[cell] ?? RollupCounts()
                if counts.add(field: counter, value: Int(truncatingIfNeeded: value)) { view.cells[cell] = counts } else { view.malformedFields += 1 }
            }
        }
        return view
    }

    static let replicasKey = "tollgate:replicas"

    // MARK: - Redis from the fleet's queue

    /// One command on the monitor loop's connection, waited for (never from an event loop).
    @discardableResult
    func send(_ command: [String]) throws -> RESPValue {
        // After `stop` the loops may be gone: a task submitted to a stopped loop never runs.
        guard !stopped.withLockedValue({ $0 }) else { throw RedisError.closed }
        let connection = redis
        let loop = self.loop
        return try loop.flatSubmit { connection.connection(for: loop).send(command: command) }.wait()
    }

    /// Several commands sent together, waited for together.
    func sendPipelined(_ commands: [[String]]) throws -> [RESPValue] {
        guard !stopped.withLockedValue({ $0 }) else { throw RedisError.closed }
        let connection = redis
        let loop = self.loop
        return try loop.flatSubmit { () -> EventLoopFuture<[RESPValue]> in
            let c = connection.connection(for: loop)
            return EventLoopFuture.whenAllSucceed(commands.map { c.send(command: $0) }, on: loop)
        }.wait()
    }
}

/// This replica's request counts per minute and cell, waiting to be published. Fed by the
/// usage sink (one lock per batch of rows); bounded by `maxCells` (past it new cells are
/// dropped and counted: the fleet view is a summary, the ledger keeps every row).
final class FleetRollups: Sendable {
    struct Key: Hashable, Sendable {
        var minute: Int64
        var cell: RollupCell
    }

    static let maxCells = 20_000
    let replica: String
    let counters: FleetCounters
    private let pending = NIOLockedValueBox<[Key: RollupCounts]>([:])

    init(replica: String, counters: FleetCounters) {
        self.replica = replica
        self.counters = counters
    }

    func add(_ records: [UsageRecord]) {
        pending.withLockedValue { pending in
            for r in records {
                let key = Key(minute: r.timeMs / 60_000, cell: RollupCell(replica: replica, department: r.department, instance: r.instance ?? ""))
                if pending[key] == nil, pending.count >= Self.maxCells {
                    counters.rollupCellsDropped.wrappingIncrement(ordering: .relaxed)
                    continue
                }
                pending[key, default: RollupCounts()].count(
                    status: r.status, cache: r.cache, tokens: (r.promptTokens ?? 0) + (r.completionTokens ?? 0), latencyMs: r.latencyMs)
            }
        }
    }

    func take() -> [Key: RollupCounts] {
        pending.withLockedValue { pending in
            defer { pending = [:] }
            return pending
        }
    }

    /// A batch that could not be published waits for the next try.
    func putBack(_ batch: [Key: RollupCounts]) {
        pending.withLockedValue { pending in
            for (key, counts) in batch {
                if pending[key] == nil, pending.count >= Self.maxCells {
                    counters.rollupCellsDropped.wrappingIncrement(ordering: .relaxed)
                    continue
                }
                pending[key, default: RollupCounts()].add(counts)
            }
        }
    }
}
