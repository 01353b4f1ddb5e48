import Foundation

/// Admission for usage reports (`/v1/usage`, `/admin/api/reports/quota`): at most `limit`
/// reports admitted — waiting for a thread or running — at a time.
///
/// A report reads and sorts every latency of its range; the pools they run on are small
/// (two threads) and their queues unbounded, so without a bound a burst of reports ties up
/// the pool and piles up memory. Past the limit a report is refused at once (503 with
/// `Retry-After`, `GatewayError.reportsBusy`). Enter before queueing the work, leave when it
/// is done; `refusals` counts the reports refused, for `/metrics`.
public final class ReportGate: @unchecked Sendable {
    public let limit: Int
    // Guarded by `lock`; a report takes it twice, nothing hot.
    private let lock = NSLock()
    private var admitted = 0
    private var refused = 0

    public init(limit: Int) {
        self.limit = max(limit, 1)
    }

    /// Takes a place; false when `limit` reports are already admitted.
    public func tryEnter() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard admitted < limit else {
            refused += 1
            return false
        }
        admitted += 1
        return true
    }

    /// Gives back a place taken with `tryEnter`.
    public func leave() {
        lock.lock()
        admitted = max(admitted - 1, 0)
        lock.unlock()
    }

    /// Reports admitted now.
    public var inFlight: Int {
        lock.lock()
        defer { lock.unlock() }
        return admitted
    }

    /// Reports refused since the start.
    public var refusals: Int {
        lock.lock()
        defer { lock.unlock() }
        return refused
    }

    /// Runs `body` if a place is free; nil when refused.
    public func run<T>(_ body: () throws -> T) rethrows -> T? {
        guard tryEnter() else { return nil }
        defer { leave() }
        return try body()
    }
}
