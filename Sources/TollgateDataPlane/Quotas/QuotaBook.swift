import Atomics
import Foundation
import NIOCore
import NIOConcurrencyHelpers
import TollgateCore

/// One meter of one department: the window it counts and the amount used, packed into one
/// atomic word, so that every event loop reserves against the same counter without a lock.
/// A reservation is one compare-and-swap: it succeeds only while `used < limit`, so requests
/// racing for the last of a quota overshoot it by at most one request's reservation.
public final class QuotaCounter: Sendable {
    private let word = ManagedAtomic<UInt64>(0)
    /// With Redis: the slices of the window this replica holds (`QuotaLeasePolicy`), packed
    /// like `word`; written by the lease manager only.
    private let grant = ManagedAtomic<UInt64>(0)
    /// With Redis: the other replicas' use of the window, as of the last sync round (for
    /// `x-ratelimit-remaining-*`, the admin page and `/metrics`; admission does not read it
    /// while leasing).
    private let others = ManagedAtomic<UInt64>(0)
    /// While leasing: the largest reservation refused for lack of a slice since the lease
    /// manager last looked (it asks for at least that much).
    private let wantedAmount = ManagedAtomic<Int>(0)
    /// While leasing: the window in which Redis answered that nothing is left (-1: none).
    private let exhaustedWindow = ManagedAtomic<Int64>(-1)
    private static let amountBits: UInt64 = 40
    private static let amountMask: UInt64 = (1 << 40) - 1

    @inline(__always)
    private static func tag(_ window: Int64) -> UInt64 { UInt64(truncatingIfNeeded: window) & 0xFF_FFFF }
    /// Amounts saturate into `0...QuotaAmount.max` (= `amountMask`): a counter never wraps, so
    /// a crafted reservation cannot reset it, nor make the Redis sync push a negative delta.
    @inline(__always)
    private static func pack(_ window: Int64, _ amount: Int) -> UInt64 {
        tag(window) << amountBits | UInt64(QuotaAmount.clamp(amount))
    }

    /// Used in `window` (0 when the counter still holds an older window).
    public func used(window: Int64) -> Int {
        let w = word.load(ordering: .relaxed)
        return w >> Self.amountBits == Self.tag(window) ? Int(w & Self.amountMask) : 0
    }

    /// Adds `amount` when the window's use is below `limit`; returns whether it did, and the
    /// use before the attempt.
    public func reserve(window: Int64, amount: Int, limit: Int) -> (admitted: Bool, used: Int) {
        var current = word.load(ordering: .relaxed)
        while true {
            let used = current >> Self.amountBits == Self.tag(window) ? Int(current & Self.amountMask) : 0
            guard used < limit else { return (false, used) }
            let (exchanged, original) = word.compareExchange(
                expected: current, desired: Self.pack(window, QuotaAmount.add(used, amount)), ordering: .relaxed)
            if exchanged { return (true, used) }
            current = original
        }
    }

    /// Settles a reservation made in `window` (ignored once the counter moved to a new window).
    public func adjust(window: Int64, by delta: Int) {
        guard delta != 0 else { return }
        var current = word.load(ordering: .relaxed)
        while current >> Self.amountBits == Self.tag(window) {
            let used = Int(current & Self.amountMask)
            let (exchanged, original) = word.compareExchange(
                expected: current, desired: Self.pack(window, QuotaAmount.add(used, delta)), ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }

    /// Sets the use of `window` (start-up, from the ledger).
    public func seed(window: Int64, amount: Int) {
        word.store(Self.pack(window, amount), ordering: .relaxed)
    }

    /// The slices held for `window` (0 when none, or only for an older window).
    public func granted(window: Int64) -> Int {
        let w = grant.load(ordering: .relaxed)
        return w >> Self.amountBits == Self.tag(window) ? Int(w & Self.amountMask) : 0
    }

    /// Adds `delta` (negative: given back) to the slices held for `window`; a new window
    /// starts from zero. Only the lease manager writes, so a load and a store suffice.
    public func addGrant(window: Int64, _ delta: Int) {
        grant.store(Self.pack(window, QuotaAmount.add(granted(window: window), delta)), ordering: .relaxed)
    }

    /// Notes a reservation refused for lack of a slice (a relaxed load and, rarely, a store).
    func noteWanted(_ amount: Int) {
        if amount > wantedAmount.load(ordering: .relaxed) { wantedAmount.store(amount, ordering: .relaxed) }
    }

    /// Whether Redis answered that `window` is spent (refusals then need no new slice).
    func isExhausted(window: Int64) -> Bool { exhaustedWindow.load(ordering: .relaxed) == window }

    func setExhausted(window: Int64, _ exhausted: Bool) {
        exhaustedWindow.store(exhausted ? window : -1, ordering: .relaxed)
    }

    /// The largest reservation refused since the last call.
    func takeWanted() -> Int { wantedAmount.exchange(0, ordering: .relaxed) }

    /// The other replicas' use of `window` as last learnt (0 when unknown).
    public func othersUsed(window: Int64) -> Int {
        let w = others.load(ordering: .relaxed)
        return w >> Self.amountBits == Self.tag(window) ? Int(w & Self.amountMask) : 0
    }

    public func setOthersUsed(window: Int64, _ amount: Int) {
        others.store(Self.pack(window, amount), ordering: .relaxed)
    }

    /// The fleet's use of `window` as this replica knows it: its own plus the others' (as of
    /// the last sync round).
    public func fleetUsed(window: Int64) -> Int {
        QuotaAmount.add(used(window: window), othersUsed(window: window))
    }
}

/// Shared by every `QuotaBook` of a data plane (a reload keeps it): whether admission decides
/// on leased slices (Redis answering) or on this replica's own counters, and how admission
/// asks the lease manager for a slice ahead of need (one hop per slice, never per request).
public final class QuotaLeaseSignal: Sendable {
    private let leasing = ManagedAtomic<Bool>(false)
    private let wakePending = ManagedAtomic<Bool>(false)
    private let waker = Hook<Void>()

    public init() {}

    /// True while admission decides on leased slices.
    @inline(__always)
    public var isLeasing: Bool { leasing.load(ordering: .relaxed) }

    func setLeasing(_ on: Bool) { leasing.store(on, ordering: .relaxed) }

    /// Installed by the lease manager: runs a round on its loop.
    func install(waker: (@Sendable () -> Void)?) {
        if let waker { self.waker.install { _ in waker() } } else { self.waker.install(nil) }
    }

    /// Asks for a round now; a no-op while one is already asked for.
    @inline(__always)
    func wake() {
        guard wakePending.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        if !waker.call(()) { wakePending.store(false, ordering: .relaxed) }
    }

    /// Whether a wake was asked for since the last call (the round calls this).
    func takeWake() -> Bool { wakePending.exchange(false, ordering: .relaxed) }
}

/// Every department's quota counters. Immutable itself (counters are shared objects), built
/// with each routing table; a reload keeps the counters of departments it keeps.
public final class QuotaBook: Sendable {
    public struct Department: Sendable {
        public let limits: QuotaLimits
        /// Indexed by `QuotaMeter.rawValue`.
        public let counters: [QuotaCounter]
    }

    public let settings: QuotaSettings
    /// Leasing on or off, and the way to ask for a slice; shared with the previous book.
    public let leases: QuotaLeaseSignal
    /// Indexed like the routing table's departments.
    public let departments: [Department]
    public let names: [String]

    public init(table: RoutingTable, previous: QuotaBook?) {
        settings = table.configuration.quotas
        leases = previous?.leases ?? QuotaLeaseSignal()
        var kept: [String: [QuotaCounter]] = [:]
        if let previous {
            for (i, name) in previous.names.enumerated() { kept[name] = previous.departments[i].counters }
        }
        names = table.departments.map(\.name)
        departments = table.configuration.departments.map { d in
            Department(limits: d.quota, counters: kept[d.name] ?? QuotaMeter.allCases.map { _ in QuotaCounter() })
        }
    }

    /// A reservation to settle when the request ends.
    public struct Reservation: Sendable {
        public let department: Int
        public let tokens: Int
        public let minute: Int64, day: Int64, month: Int64
    }

    public enum Admission: Sendable {
        case admitted(Reservation)
        case rejected(meter: QuotaMeter, limit: Int, used: Int, requested: Int, retryAfterSeconds: Int)
    }

    /// Reserves one request and `tokens` against every limited meter, or none of them.
    public func admit(department: Int, tokens: Int, at now: QuotaCalendar.Current, nowMs: Int64) -> Admission {
        let d = departments[department]
        let reservation = Reservation(department: department, tokens: tokens, minute: now.minute, day: now.day, month: now.month)
        guard !d.limits.isUnlimited else { return .admitted(reservation) }
        // The meters reserved so far, as bits (an array here cost an allocation per request);
        // each one's amount follows from the meter.
        var taken: UInt32 = 0
        func amountOf(_ meter: QuotaMeter) -> Int { meter == .requestsPerMinute ? 1 : tokens }
        let leasing = leases.isLeasing
        var wake = false
        for meter in QuotaMeter.allCases {
            guard let limit = d.limits.limit(meter) else { continue }
            let amount = amountOf(meter)
            let window = now.index(meter.window)
            let counter = d.counters[meter.rawValue]
            // Leasing: the slices held; before the window's first slice arrives, one slice of
            // credit (QuotaLeasePolicy: a new minute does not start with refusals; what it
            // admits is charged as debt with the first slice, and no credit is given again).
            // Else this replica's own counter against the limit, less what the others were
            // last known to use (0 without Redis).
            let cap: Int
            if leasing {
                let granted = counter.granted(window: window)
                cap = min(limit, granted > 0 ? granted : settings.lease.credit(limit: limit))
            } else {
                cap = max(0, limit - counter.othersUsed(window: window))
            }
            let (ok, used) = counter.reserve(window: window, amount: amount, limit: cap)
            if !ok {
                for m in QuotaMeter.allCases where taken & (1 << m.rawValue) != 0 {
                    d.counters[m.rawValue].adjust(window: now.index(m.window), by: -amountOf(m))
                }
                // A refusal for lack of a slice asks for one (not when the fleet's window is spent).
                if leasing, !counter.isExhausted(window: window) {
                    counter.noteWanted(amount)
                    leases.wake()
                }
                let wait = max(1, Int((now.end(meter.window) - nowMs + 999) / 1000))
                return .rejected(meter: meter, limit: limit, used: QuotaAmount.add(used, counter.othersUsed(window: window)),
                                 requested: amount, retryAfterSeconds: wait)
            }
            if leasing, counter.granted(window: window) - QuotaAmount.add(used, amount) <= settings.lease.lowWater(limit: limit) {
                wake = true
            }
            taken |= 1 << meter.rawValue
        }
        // Ahead of need: the next slice is asked for while this one lasts.
        if wake { leases.wake() }
        return .admitted(reservation)
    }

    /// Replaces a reservation by what the request really used.
    /// `refundRequest`: no instance answered, so the request itself costs nothing either (its
    /// `requests_per_minute` count is given back).
    public func settle(_ r: Reservation, actualTokens: Int, refundRequest: Bool = false) {
        let d = departments[r.department]
        if refundRequest, d.limits.requestsPerMinute != nil {
            d.counters[QuotaMeter.requestsPerMinute.rawValue].adjust(window: r.minute, by: -1)
        }
        let delta = QuotaAmount.clamp(actualTokens) - QuotaAmount.clamp(r.tokens)
        guard delta != 0 else { return }
        if d.limits.tokensPerMinute != nil { d.counters[QuotaMeter.tokensPerMinute.rawValue].adjust(window: r.minute, by: delta) }
        if d.limits.tokensPerDay != nil { d.counters[QuotaMeter.tokensPerDay.rawValue].adjust(window: r.day, by: delta) }
        if d.limits.tokensPerMonth != nil { d.counters[QuotaMeter.tokensPerMonth.rawValue].adjust(window: r.month, by: delta) }
    }

    /// `x-ratelimit-*` headers: limit, remaining and reset for each limited meter.
    public func headers(department: Int, at now: QuotaCalendar.Current, nowMs: Int64) -> [(String, String)] {
        var out: [(String, String)] = []
        out.reserveCapacity(6)
        forEachLimitedMeter(department: department, at: now, nowMs: nowMs) { names, limit, remaining, resetMs in
            out.append((names.limit, String(limit)))
            out.append((names.remaining, String(remaining)))
            // "12.345s" without String(format:), which showed up at ~4% of a request in a profile.
            let ms = Int(resetMs % 1000)
            let fraction = ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : String(ms)
            out.append((names.reset, String(resetMs / 1000) + "." + fraction + "s"))
        }
        return out
    }

    /// The same headers as `headers(department:at:nowMs:)`, written as header lines into
    /// `buffer` (the head of every forwarded answer: no `String` made per figure).
    func writeHeaders(into buffer: inout ByteBuffer, department: Int, at now: QuotaCalendar.Current, nowMs: Int64) {
        forEachLimitedMeter(department: department, at: now, nowMs: nowMs) { names, limit, remaining, resetMs in
            buffer.writeString(names.limit)
            buffer.writeStaticString(": ")
            buffer.writeDecimal(limit)
            buffer.writeStaticString("\r\n")
            buffer.writeString(names.remaining)
            buffer.writeStaticString(": ")
            buffer.writeDecimal(remaining)
            buffer.writeStaticString("\r\n")
            buffer.writeString(names.reset)
            buffer.writeStaticString(": ")
            buffer.writeDecimal(Int(resetMs / 1000))
            buffer.writeInteger(UInt8(ascii: "."))
            let ms = Int(resetMs % 1000)
            if ms < 100 { buffer.writeInteger(UInt8(ascii: "0")) }
            if ms < 10 { buffer.writeInteger(UInt8(ascii: "0")) }
            buffer.writeDecimal(ms)
            buffer.writeStaticString("s\r\n")
        }
    }

    /// Each meter the department has a limit on: its header names, the limit, what remains of
    /// it in the current window, and the milliseconds until that window resets.
    private func forEachLimitedMeter(department: Int, at now: QuotaCalendar.Current, nowMs: Int64,
                                     _ body: (_ names: (limit: String, remaining: String, reset: String), _ limit: Int,
                                              _ remaining: Int, _ resetMs: Int64) -> Void) {
        let d = departments[department]
        for meter in QuotaMeter.allCases {
            guard let limit = d.limits.limit(meter) else { continue }
            let used = d.counters[meter.rawValue].fleetUsed(window: now.index(meter.window))
            body(Self.headerNames[meter.rawValue], limit, max(0, limit - used), max(0, now.end(meter.window) - nowMs))
        }
    }

    private static let headerNames: [(limit: String, remaining: String, reset: String)] = QuotaMeter.allCases.map {
        ("x-ratelimit-limit-\($0.headerName)", "x-ratelimit-remaining-\($0.headerName)", "x-ratelimit-reset-\($0.headerName)")
    }

    /// Use so far, for reports and the admin page: meter → used in the current window.
    public func usage(department: Int, at now: QuotaCalendar.Current) -> [QuotaMeter: Int] {
        var out: [QuotaMeter: Int] = [:]
        for meter in QuotaMeter.allCases {
            out[meter] = departments[department].counters[meter.rawValue].fleetUsed(window: now.index(meter.window))
        }
        return out
    }
}
