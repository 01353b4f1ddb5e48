import Foundation
import GRDB
import Logging
import TollgateCore

/// Commits usage records to the ledger from one dedicated writer thread.
///
/// Event loops never touch SQLite: each collects its records locally and now and then hands
/// a whole batch to `submit(_:)`, which appends it to a pending list under a lock (one lock
/// per batch, never per record) and signals a condition variable. The writer thread — a
/// `Thread` of its own, not a task and not an event loop — wakes when records are pending,
/// or every `interval` otherwise, and commits up to `maxBatch` records per transaction with
/// one cached prepared statement. While it commits, new batches pile up and go into the
/// next transaction, so the write rate follows the load.
///
/// **Priority.** Writing the ledger is background work: on Linux the writer thread runs at
/// `SCHED_IDLE`, so it takes only CPU time nothing else wants and never holds a core that an
/// event loop, a client or an instance needs (at normal priority its commits of a few
/// milliseconds every 100 ms delayed requests by as much: the gateway's p99 at one connection
/// was over 1 ms, 0.16–0.3 ms without). When the machine is saturated that time may not come:
/// once more than `catchUpThreshold` records wait, a second thread at normal priority, started
/// with the first and asleep until then, takes over the commits until the backlog is below a
/// tenth of that, and hands back. Only one of the two commits at a time (they hand over between
/// transactions), so the order of commits and `flush()` stay as with one thread.
///
/// **What a crash can lose.** A record is durable once its transaction has committed.
/// If the process crashes (or is killed with SIGKILL), the records lost are those submitted
/// but not yet committed — at most about one batch interval (`interval`, 100 ms by default,
/// plus the time of the transaction in progress) — plus whatever the event loops had
/// collected but not yet submitted (their own collection interval). A graceful shutdown
/// loses nothing: `close()` commits everything submitted first. With `synchronous = NORMAL`
/// in WAL mode, committed transactions survive a process crash; an operating-system crash
/// or power loss can additionally roll back the last transactions not yet synced to disk.
///
/// A failed write (disk full, database locked past the busy timeout) never drops the batch
/// and never crashes: the batch is retried with exponential backoff (50 ms doubling to 5 s)
/// and each failure is logged; records keep queueing meanwhile (watch `queueDepth`). Only
/// a record SQLite refuses as data (a constraint violation, which a well-formed
/// `UsageRecord` cannot cause) is logged in full and skipped, so that one bad row cannot
/// block the ledger forever.
///
/// **Bounded backlog.** Once `maxBacklog` records wait, `isSaturated` is true: the data plane
/// refuses new requests (503 with `Retry-After`) rather than answer requests it cannot
/// record. Records of requests already admitted are still taken, up to a hard ceiling of
/// twice `maxBacklog`; past that (a data plane that does not check `isSaturated`) records
/// are dropped, counted in `droppedRows` and logged, so that memory stays bounded.
///
/// **Shutdown deadline.** `close(timeout:)` gives the writer until the deadline to commit
/// what is pending; past it, it stops retrying, logs how many rows could not be written and
/// returns that number, so that SIGTERM with a full disk ends instead of waiting forever.
public final class UsageWriter: UsageRecordSink, Sendable {
    /// The longest the writer sleeps when nothing is pending.
    public let interval: Duration
    /// The most records committed in one transaction.
    public let maxBatch: Int
    /// Records waiting beyond which the normal-priority thread commits (see "Priority").
    public let catchUpThreshold: Int
    /// Records waiting at which the writer is saturated (see "Bounded backlog").
    public let maxBacklog: Int
    private let state: WriterState
    private let logger: Logger

    /// Starts the writer thread. Call `close()` before the process exits.
    public init(
        database: LedgerDatabase,
        interval: Duration = .milliseconds(100),
        maxBatch: Int = 2_000,
        catchUpThreshold: Int = 10_000,
        maxBacklog: Int = 100_000,
        logger: Logger = Logger(label: "tollgate.ledger.writer")
    ) {
        precondition(maxBatch > 0, "maxBatch must be positive")
        precondition(catchUpThreshold > 0, "catchUpThreshold must be positive")
        precondition(maxBacklog > 0, "maxBacklog must be positive")
        self.interval = interval
        self.maxBatch = maxBatch
        self.catchUpThreshold = catchUpThreshold
        self.maxBacklog = maxBacklog
        self.logger = logger
        let state = WriterState()
        self.state = state
        // Both threads are created here, at the creator's priority; the background one then
        // lowers its own (a thread cannot raise it again without privileges, hence two threads).
        for role in [WriterRole.background, .catchUp] {
            let loop = WriterLoop(
                pool: database.pool, state: state, role: role, interval: interval.seconds, maxBatch: maxBatch,
                catchUpThreshold: catchUpThreshold, logger: logger)
            Thread { loop.run() }.start()
        }
    }

    /// Which thread commits now: `background` (idle priority) or `catchUp` (normal priority).
    public var activeRole: WriterRole {
        state.withLock { $0.active }
    }

    /// Times the normal-priority thread took over because records piled up.
    public var catchUps: Int {
        state.withLock { $0.catchUps }
    }

    deinit {
        // The thread holds no reference to self: let it commit what is left and exit.
        state.condition.lock()
        state.closing = true
        state.condition.broadcast()
        state.condition.unlock()
    }

    /// Hands a batch of records to the writer. Cheap and never blocks on SQLite: one lock,
    /// one append, one signal. Ignored (and logged) after `close()`.
    public func submit(_ batch: [UsageRecord]) {
        guard !batch.isEmpty else { return }
        state.condition.lock()
        if state.closing {
            state.droppedAfterClose += batch.count
            let dropped = state.droppedAfterClose
            state.condition.unlock()
            logger.warning("usage records submitted after the writer was closed are ignored",
                           metadata: ["records": "\(batch.count)", "ignored_total": "\(dropped)"])
            return
        }
        let room = 2 * maxBacklog - (state.submitted - state.processed)
        if room < batch.count {
            // Past the hard ceiling: keep what fits, count and log the rest (see "Bounded backlog").
            let kept = max(room, 0)
            state.droppedOverCeiling += batch.count - kept
            let dropped = state.droppedOverCeiling
            if kept > 0 {
                state.pending.append(Array(batch.prefix(kept)))
                state.submitted += kept
                state.condition.broadcast()
            }
            state.condition.unlock()
            logger.error("the ledger's backlog is full; usage records dropped", metadata: [
                "records": "\(batch.count - kept)", "dropped_total": "\(dropped)", "ceiling": "\(2 * maxBacklog)",
            ])
            return
        }
        state.pending.append(batch)
        state.submitted += batch.count
        state.condition.broadcast()
        state.condition.unlock()
    }

    /// True while `maxBacklog` or more records wait: the ledger cannot keep up (disk full,
    /// database locked). The data plane refuses new requests meanwhile (503, `Retry-After`).
    /// One lock, no I/O: cheap enough to read per request.
    public var isSaturated: Bool {
        state.withLock { $0.submitted - $0.processed >= maxBacklog }
    }

    /// Records dropped because the backlog passed its hard ceiling (`2 × maxBacklog`).
    public var droppedRows: Int {
        state.withLock { $0.droppedOverCeiling }
    }

    /// Records given up at a close deadline (`close(timeout:)`).
    public var abandonedRows: Int {
        state.withLock { $0.abandonedRows }
    }

    /// Records submitted and not yet committed.
    public var queueDepth: Int {
        state.withLock { $0.submitted - $0.processed }
    }

    /// Duration of the last committed transaction, in milliseconds.
    public var lastWriteLatencyMs: Double {
        state.withLock { $0.lastWriteLatencyMs }
    }

    /// Rows committed since the writer started.
    public var committedRows: Int {
        state.withLock { $0.committed }
    }

    /// Failed write attempts since the writer started (each was retried).
    public var writeErrors: Int {
        state.withLock { $0.writeErrors }
    }

    /// Returns once every record submitted before this call is committed. While writes
    /// keep failing (disk full) it keeps waiting: nothing is given up.
    public func flush() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            state.condition.lock()
            let target = state.submitted
            if state.processed >= target {
                state.condition.unlock()
                continuation.resume()
                return
            }
            state.flushWaiters.append((target, continuation))
            state.condition.broadcast()
            state.condition.unlock()
        }
    }

    /// Commits everything submitted within `timeout`, then stops the threads, and returns how
    /// many records could not be written (0 when all were). Past the deadline the writer
    /// stops retrying and the rows still pending are logged as lost. Later submits are
    /// ignored and logged.
    @discardableResult
    public func close(timeout: Duration) async -> Int {
        let deadline = Task { [state, logger] in
            try await Task.sleep(for: timeout)
            let unwritten: Int = state.withLock { state in
                guard !state.finished else { return 0 }
                state.abandoned = true
                state.condition.broadcast()
                return state.submitted - state.processed
            }
            guard unwritten > 0 else { return }
            logger.error("the ledger could not be written before the shutdown deadline; rows lost", metadata: [
                "rows_not_written": "\(unwritten)", "timeout": "\(timeout)",
            ])
            // Let `close` return now, whatever the writer threads are blocked in.
            let waiters: [CheckedContinuation<Void, Never>] = state.withLock { state in
                defer { state.closeWaiters = [] }
                return state.closeWaiters
            }
            for waiter in waiters { waiter.resume() }
        }
        await close()
        deadline.cancel()
        return state.withLock { state in
            let pending = state.submitted - state.processed
            return state.abandoned ? max(pending, 0) + state.abandonedRows : 0
        }
    }

    /// Commits everything submitted, then stops the thread. Later submits are ignored and
    /// logged. Safe to call more than once. Waits as long as writes keep failing: use
    /// `close(timeout:)` at shutdown.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            state.condition.lock()
            state.closing = true
            if state.finished {
                state.condition.unlock()
                continuation.resume()
                return
            }
            state.closeWaiters.append(continuation)
            state.condition.broadcast()
            state.condition.unlock()
        }
    }
}

/// Everything the producers and the writer thread share, guarded by `condition`.
final class WriterState: @unchecked Sendable {
    let condition = NSCondition()
    var pending: [[UsageRecord]] = []
    /// Records accepted by `submit`, since the start.
    var submitted = 0
    /// Records the writer is done with: committed, or skipped as refused data.
    var processed = 0
    var committed = 0
    var lastWriteLatencyMs = 0.0
    var writeErrors = 0
    var droppedAfterClose = 0
    /// Records dropped past the backlog's hard ceiling.
    var droppedOverCeiling = 0
    /// Set at a close deadline: stop retrying, give up what is pending.
    var abandoned = false
    /// Records given up because of `abandoned`.
    var abandonedRows = 0
    var closing = false
    var finished = false
    /// The thread allowed to commit.
    var active = WriterRole.background
    var catchUps = 0
    /// Writer threads still running (close waits for both).
    var running = 2
    var flushWaiters: [(target: Int, continuation: CheckedContinuation<Void, Never>)] = []
    var closeWaiters: [CheckedContinuation<Void, Never>] = []

    func withLock<T>(_ body: (WriterState) -> T) -> T {
        condition.lock()
        defer { condition.unlock() }
        return body(self)
    }
}

/// The two writer threads (see `UsageWriter`, "Priority").
public enum WriterRole: Sendable {
    /// Idle priority: commits while the backlog is small.
    case background
    /// Normal priority: commits while more than `catchUpThreshold` records wait, and at close.
    case catchUp
}

/// The body of a writer thread.
private struct WriterLoop: Sendable {
    let pool: DatabasePool
    let state: WriterState
    let role: WriterRole
    let interval: TimeInterval
    let maxBatch: Int
    let catchUpThreshold: Int
    let logger: Logger

    func run() {
        // Named for `top -H` and /proc; set from the thread itself, which is when Foundation
        // passes the name on to the kernel.
        Thread.current.name = role == .background ? "tg-ledger" : "tg-ledger-catch"
        if role == .background { lowerPriority() }
        var chunk: [UsageRecord] = []
        chunk.reserveCapacity(maxBatch)
        work: while true {
            state.condition.lock()
            // Only the active thread commits; the other sleeps until it is handed the work.
            while state.active != role {
                if state.closing && role == .background { break work }  // the catch-up thread finishes
                state.condition.wait()
            }
            if state.closing && role == .background {
                // Closing: the rest is committed at normal priority, by the catch-up thread.
                state.active = .catchUp
                state.condition.broadcast()
                break work
            }
            if state.pending.isEmpty && !state.closing {
                _ = state.condition.wait(until: Date(timeIntervalSinceNow: interval))
                if state.closing && role == .background {
                    state.condition.unlock()
                    continue  // hand over at the top
                }
            }
            if state.abandoned {
                // Past the close deadline: what is pending is given up (close logged it).
                let given = state.pending.reduce(0) { $0 + $1.count }
                state.pending = []
                state.abandonedRows += given
                state.processed += given
            }
            // About one transaction's worth at a time, so that a hand-over is never far off.
            var count = 0
            var takeCount = 0
            while takeCount < state.pending.count && count < maxBatch {
                count += state.pending[takeCount].count
                takeCount += 1
            }
            let taken = state.pending[..<takeCount]
            state.pending.removeFirst(takeCount)
            let exit = taken.isEmpty && state.closing
            if exit { break work }
            state.condition.unlock()

            for batch in taken {
                for record in batch {
                    chunk.append(record)
                    if chunk.count == maxBatch {
                        commit(chunk)
                        chunk.removeAll(keepingCapacity: true)
                    }
                }
            }
            if !chunk.isEmpty {
                commit(chunk)
                chunk.removeAll(keepingCapacity: true)
            }
            handOverIfNeeded()
        }
        // Here with the lock held.
        state.running -= 1
        guard state.running == 0 else {
            state.condition.broadcast()
            state.condition.unlock()
            return
        }
        state.finished = true
        let waiters = state.closeWaiters + state.flushWaiters.map(\.continuation)
        state.closeWaiters = []
        state.flushWaiters = []
        state.condition.unlock()
        for waiter in waiters { waiter.resume() }
    }

    /// Between transactions: the background thread hands over when records pile up, the
    /// catch-up thread hands back once they are few again.
    private func handOverIfNeeded() {
        state.condition.lock()
        defer { state.condition.unlock() }
        guard !state.closing else { return }
        let waiting = state.submitted - state.processed
        switch role {
        case .background where waiting > catchUpThreshold:
            state.active = .catchUp
            state.catchUps += 1
            logger.notice("usage records pile up; committing at normal priority", metadata: ["waiting": "\(waiting)"])
            state.condition.broadcast()
        case .catchUp where waiting <= catchUpThreshold / 10:
            state.active = .background
            state.condition.broadcast()
        default:
            break
        }
    }

    /// Idle scheduling class for this thread: it runs only when a core has nothing else to do.
    private func lowerPriority() {
        #if os(Linux)
        var param = sched_param()
        let schedIdle: Int32 = 5  // SCHED_IDLE (<linux/sched.h>); Glibc's module does not export it
        if sched_setscheduler(0, schedIdle, &param) != 0 {
            logger.notice("could not lower the ledger writer's priority; it runs at normal priority", metadata: ["errno": "\(errno)"])
        }
        #endif
    }

    /// Commits `records` in one transaction, retrying until it succeeds or a close deadline
    /// passes (then they are counted as abandoned).
    private func commit(_ records: [UsageRecord]) {
        var attempt = 0
        while true {
            if attempt > 0 && giveUpIfAbandoned(records.count) { return }
            let start = ContinuousClock.now
            do {
                try insert(records)
                let elapsed = (ContinuousClock.now - start).seconds * 1000
                if attempt > 0 {
                    logger.notice("usage writes recovered", metadata: ["rows": "\(records.count)", "attempts": "\(attempt + 1)"])
                }
                didProcess(committed: records.count, skipped: 0, latencyMs: elapsed)
                return
            } catch {
                attempt += 1
                state.withLock { $0.writeErrors += 1 }
                if Self.isRefusedData(error) {
                    commitOneByOne(records)
                    return
                }
                let delay = min(0.05 * Double(1 << min(attempt - 1, 7)), 5.0)
                logger.error("usage write failed; the batch is kept and retried", metadata: [
                    "rows": "\(records.count)", "attempt": "\(attempt)",
                    "retry_in_ms": "\(Int(delay * 1000))", "error": "\(error)",
                ])
                // Waits on the condition, so that a close deadline ends the wait at once.
                state.condition.lock()
                if !state.abandoned { _ = state.condition.wait(until: Date(timeIntervalSinceNow: delay)) }
                state.condition.unlock()
            }
        }
    }

    /// After a close deadline: counts `count` records as abandoned and returns true.
    private func giveUpIfAbandoned(_ count: Int) -> Bool {
        state.condition.lock()
        guard state.abandoned else {
            state.condition.unlock()
            return false
        }
        state.abandonedRows += count
        state.condition.unlock()
        didProcess(committed: 0, skipped: count, latencyMs: nil)
        return true
    }

    /// A batch SQLite refused as data: commit the good rows, log and skip the bad ones.
    private func commitOneByOne(_ records: [UsageRecord]) {
        for record in records {
            let start = ContinuousClock.now
            do {
                try insert([record])
                didProcess(committed: 1, skipped: 0, latencyMs: (ContinuousClock.now - start).seconds * 1000)
            } catch where Self.isRefusedData(error) {
                logger.error("usage record refused by SQLite and skipped", metadata: [
                    "error": "\(error)", "record": "\(record)",
                ])
                didProcess(committed: 0, skipped: 1, latencyMs: nil)
            } catch {
                commit([record])  // an I/O error again: back to retrying
            }
        }
    }

    private func insert(_ records: [UsageRecord]) throws {
        try pool.write { db in
            try UsageRecord.insert(records, with: db.cachedStatement(sql: UsageRecord.insertSQL), in: db)
        }
    }

    private func didProcess(committed: Int, skipped: Int, latencyMs: Double?) {
        state.condition.lock()
        state.committed += committed
        state.processed += committed + skipped
        if let latencyMs { state.lastWriteLatencyMs = latencyMs }
        let processed = state.processed
        var ready: [CheckedContinuation<Void, Never>] = []
        state.flushWaiters.removeAll { waiter in
            guard waiter.target <= processed else { return false }
            ready.append(waiter.continuation)
            return true
        }
        state.condition.unlock()
        for continuation in ready { continuation.resume() }
    }

    private static func isRefusedData(_ error: any Error) -> Bool {
        guard let error = error as? DatabaseError else { return false }
        return error.resultCode == .SQLITE_CONSTRAINT || error.resultCode == .SQLITE_MISMATCH
            || error.resultCode == .SQLITE_TOOBIG
    }
}

extension Duration {
    /// The duration in seconds, as a `TimeInterval`.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
