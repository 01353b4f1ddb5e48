/// Requests in flight per lane (one pool, one event loop).
public struct LaneCounts: Sendable, Equatable {
    private var counts: (Int, Int, Int) = (0, 0, 0)

    public init() {}

    public static func == (a: LaneCounts, b: LaneCounts) -> Bool { a.counts == b.counts }

    public subscript(lane: Lane) -> Int {
        get {
            switch lane {
            case .interactive: counts.0
            case .standard: counts.1
            case .batch: counts.2
            }
        }
        set {
            switch lane {
            case .interactive: counts.0 = newValue
            case .standard: counts.1 = newValue
            case .batch: counts.2 = newValue
            }
        }
    }

    /// Requests of `lane` and every lane below it.
    public func atOrBelow(_ lane: Lane) -> Int {
        Lane.allCases.reduce(0) { $1 >= lane ? $0 + self[$1] : $0 }
    }

    public static func + (a: LaneCounts, b: LaneCounts) -> LaneCounts {
        var sum = LaneCounts()
        for lane in Lane.allCases { sum[lane] = a[lane] + b[lane] }
        return sum
    }
}

/// Keeps a pool's slots on one event loop back from lower lanes for the higher lanes' recent
/// traffic: pure policy, the time given in monotonic nanoseconds.
///
/// Why: strict priority only decides who gets a slot *that frees while both wait*. An
/// interactive client that sends its next request a moment after its last answer finds that its
/// own slot went to a waiting batch request in between, and waits for the next slot to free —
/// under a flood of equal-length generations, which finish in waves, up to a whole generation
/// (the overload benchmark: customer service's p99 1.8× its p99 alone, its p50 unchanged). So
/// a lane may take a free slot only if what stays free covers the higher lanes' *unused recent
/// peak*: for each lane above it, the most it had in flight within the last one to two windows,
/// less what it has in flight now. With interactive traffic gone for two windows the reserve is
/// gone; it never exceeds what the higher lanes really used.
///
/// The starvation guard's share still holds: a lower lane whose requests (with those below it)
/// hold less than `min_share` of the slots may take one whatever is reserved, so a reserve
/// cannot starve the lanes below it beyond what `AdmissionQueue`'s guard promises.
public struct SlotReserve: Sendable, Equatable {
    /// How long a lane's peak is remembered: between one and two windows.
    public var window: Int64
    private var peak = LaneCounts()
    private var previousPeak = LaneCounts()
    private var windowStart: Int64 = 0

    /// `window` in nanoseconds; 0 keeps nothing back (strict priority only).
    public init(window: Int64) {
        self.window = max(0, window)
    }

    /// A request of some lane began: `inFlight` are the pool's counts on this loop with it.
    public mutating func observe(_ inFlight: LaneCounts, now: Int64) {
        guard window > 0 else { return }
        rotate(now: now, inFlight: inFlight)
        for lane in Lane.allCases where inFlight[lane] > peak[lane] { peak[lane] = inFlight[lane] }
    }

    /// Slots a request of `lane` must leave free: the higher lanes' recent peaks less what they
    /// have in flight now.
    public mutating func held(for lane: Lane, inFlight: LaneCounts, now: Int64) -> Int {
        guard window > 0 else { return 0 }
        rotate(now: now, inFlight: inFlight)
        var held = 0
        for higher in Lane.allCases where higher < lane {
            held += max(0, max(peak[higher], previousPeak[higher]) - inFlight[higher])
        }
        return held
    }

    /// Whether a request of `lane` may take one of the `free` slots (of `total` on this loop;
    /// `Int.max` when the pool's instances have no limit).
    public mutating func mayTake(lane: Lane, free: Int, total: Int, inFlight: LaneCounts, minSharePerMille: Int, now: Int64) -> Bool {
        guard free > 0 else { return false }
        guard window > 0, lane != .interactive, total != .max else { return true }
        // The guard's share: lanes at or below this one keep at least `min_share` of the slots.
        if inFlight.atOrBelow(lane) * 1000 < total * minSharePerMille { return true }
        return free > held(for: lane, inFlight: inFlight, now: now)
    }

    /// When a reserve kept now has certainly lapsed without new traffic (for a timer); nil when
    /// nothing is remembered.
    public var lapsesAt: Int64? {
        guard window > 0 else { return nil }
        // The lowest lane holds nothing back for anyone: its peaks do not count. (Asked before
        // every lower lane's request takes a slot: no array made here.)
        if peak[.interactive] > 0 || peak[.standard] > 0 { return windowStart + 2 * window }
        if previousPeak[.interactive] > 0 || previousPeak[.standard] > 0 { return windowStart + window }
        return nil
    }

    /// Moves the windows on: the current one becomes the previous one; after a gap of more than
    /// a window, the previous one is what was in flight all along (nothing began meanwhile).
    private mutating func rotate(now: Int64, inFlight: LaneCounts) {
        guard now - windowStart >= window else { return }
        let elapsed = (now - windowStart) / window
        previousPeak = elapsed == 1 ? peak : inFlight
        peak = inFlight
        windowStart += elapsed * window
    }
}
