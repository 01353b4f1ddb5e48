/// Leased quotas: how replicas share one limit without asking Redis per request.
///
/// With Redis, each replica takes *slices* of a meter's window from a shared counter in Redis
/// (one Lua script: `QuotaLease.script`, capped at what is left) and admits locally against
/// what it holds. Before its first slice of a window arrives it may admit one slice on
/// *credit* (so that a new minute does not start with refusals); what it admitted past its
/// slices is charged to the shared counter as debt with the next slice (`QuotaLeaseState`),
/// and the credit is not given again in that window. What a replica holds past one slice it
/// gives back when it has been idle. Fleet-wide a window admits at most `limit + replicas × slice` (each
/// replica's credit), and on token meters one reservation more per racing event loop, as
/// without Redis. A slice is at least the largest reservation admission was refused for.
///
/// The slice shrinks with the window's remainder: the script grants
/// `min(slice, max(1, left / remainderDivisor))`, so the last of a quota is handed out a little
/// at a time and no replica sits on a large unused slice while another refuses.
///
/// Pure: the lease manager (`QuotaSync`) feeds in the counters and applies the action.
public struct QuotaLeasePolicy: Sendable, Equatable {
    /// The largest slice, as a percentage of the limit (`quotas.lease`, default 1%).
    public var percent: Double
    /// The slice asked for shrinks to `left / remainderDivisor` near the end of a quota.
    public static let remainderDivisor = 8
    /// Rounds without use after which a replica gives back what it holds.
    public static let idleRoundsBeforeGiveBack = 10
    /// Rounds to wait before asking again once Redis answered that nothing is left.
    public static let roundsAfterExhausted = 10

    public init(percent: Double = 1) {
        self.percent = percent
    }

    /// The largest slice of a meter limited to `limit`: at least 1.
    public func slice(limit: Int) -> Int {
        let raw = Double(QuotaAmount.clamp(limit)) * percent / 100
        return Swift.max(1, Swift.min(QuotaAmount.max, Int(raw.rounded(.down))))
    }

    /// What a replica may admit beyond its slices (one slice).
    public func credit(limit: Int) -> Int { slice(limit: limit) }

    /// A new slice is asked for when what is left of the held slices is at most this.
    public func lowWater(limit: Int) -> Int { slice(limit: limit) / 2 }

    /// What the script grants (mirrored here for tests): nothing when `taken >= limit`, else
    /// `min(want, max(1, left / remainderDivisor))`.
    public static func grant(limit: Int, taken: Int, want: Int) -> Int {
        let left = limit - taken
        guard want > 0, left > 0 else { return 0 }
        return Swift.min(want, Swift.max(1, left / remainderDivisor))
    }
}

/// One replica's decision for one meter in one round.
public enum QuotaLeaseAction: Sendable, Equatable {
    case none
    /// Charge `debt` (used past the slices held, unconditionally; negative: a charge given
    /// back) and ask for a slice of up to `want` (0: only the charge).
    case take(want: Int, debt: Int)
    /// Give back `amount` unused.
    case giveBack(amount: Int)
}

/// What the lease manager remembers of one meter between rounds.
///
/// Admission may use what the replica *holds* (`granted`: slices, plus what was folded in —
/// below). Use past that (a reservation racing another on a token meter, a window's first
/// requests admitted on credit, admissions while Redis was away) is *debt*: charged to the
/// shared counter so that the fleet's count stays true. Debt from credit or from a Redis outage
/// is folded into what the replica holds (it was admitted by the rules in force then); debt
/// from racing reservations is only charged (`charged`), never held: otherwise every charge
/// would make room for the next overshoot, and settlements below the reservations would let a
/// replica admit without end. The charge follows the use: when settlements bring the use back
/// below what is held, the charge is given back, so the shared counter holds
/// Σ max(held, used) over the replicas.
public struct QuotaLeaseState: Sendable, Equatable {
    public var window: Int64
    /// The local use seen in the previous round.
    public var lastUsed: Int = 0
    /// Rounds in a row without any change in use.
    public var idleRounds: Int = 0
    /// Rounds left before asking again after Redis said nothing is left (0: ask).
    public var exhaustedRounds: Int = 0
    /// Use past what is held, charged to the shared counter (and not held).
    public var charged: Int = 0
    /// Redis said nothing is left: ask again (once `exhaustedRounds` ran out) even without new
    /// use, since an idle replica may have given slices back. Admission does not wake the lease
    /// manager meanwhile (`QuotaCounter.isExhausted`): the 429s are genuine.
    public var exhausted = false

    public init(window: Int64) {
        self.window = window
    }

    /// One round: `used` and `granted` are this replica's counters for `window`; `woken` when
    /// admission asked for a slice since the last round; `wanted` the largest reservation
    /// admission refused for lack of a slice (a slice is at least that, so a token meter whose
    /// slice is smaller than one request still moves).
    public mutating func decide(window: Int64, used: Int, granted: Int, limit: Int, policy: QuotaLeasePolicy,
                                woken: Bool, wanted: Int = 0) -> QuotaLeaseAction {
        if window != self.window { self = QuotaLeaseState(window: window) }
        let active = woken || used != lastUsed
        idleRounds = active ? 0 : idleRounds + 1
        lastUsed = used
        if exhaustedRounds > 0 { exhaustedRounds -= 1 }
        let asking = active || (exhausted && exhaustedRounds == 0)
        // Positive: newly charged; negative: given back after settlements.
        let debt = Swift.max(0, used - granted) - charged
        let remaining = granted - used
        if asking, exhaustedRounds == 0, remaining <= policy.lowWater(limit: limit) {
            let want = Swift.max(policy.slice(limit: limit), Swift.min(QuotaAmount.clamp(wanted), QuotaAmount.clamp(limit)))
            return .take(want: want, debt: debt)
        }
        if debt != 0 { return .take(want: 0, debt: debt) }
        // An idle replica keeps one slice, so that its next request is not refused while it
        // asks again (the fleet's unused remainder is at most replicas × slice).
        let keep = policy.slice(limit: limit)
        if !active, idleRounds >= QuotaLeasePolicy.idleRoundsBeforeGiveBack, remaining > keep {
            return .giveBack(amount: remaining - keep)
        }
        return .none
    }

    /// Redis answered a `take`: returns what to add to the slices held. `fold`: the debt was
    /// admitted on credit (nothing held yet) or while Redis was away, and is held from now on.
    public mutating func took(granted: Int, debt: Int, wanted: Int, fold: Bool) -> Int {
        if wanted > 0 {
            exhausted = granted == 0
            if exhausted { exhaustedRounds = QuotaLeasePolicy.roundsAfterExhausted }
        }
        if fold, debt > 0 { return QuotaAmount.add(granted, debt) }
        charged = QuotaAmount.add(charged, debt)
        return granted
    }
}

public enum QuotaLease {
    /// KEYS[1]: the meter's lease counter for one window (slices handed out, fleet-wide).
    /// ARGV: limit, want, delta (a debt > 0 or a give-back < 0, applied unconditionally),
    /// time to live in ms, remainder divisor. Returns {granted, taken after}.
    /// Redis runs a script atomically: no two replicas can take the same remainder.
    public static let script = """
        local taken = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
        local limit = tonumber(ARGV[1])
        local want = tonumber(ARGV[2])
        local delta = tonumber(ARGV[3])
        taken = taken + delta
        if taken < 0 then taken = 0 end
        local grant = 0
        local left = limit - taken
        if want > 0 and left > 0 then
          grant = math.floor(left / tonumber(ARGV[5]))
          if grant < 1 then grant = 1 end
          if grant > want then grant = want end
          taken = taken + grant
        end
        redis.call('SET', KEYS[1], string.format('%d', taken), 'PX', ARGV[4])
        return {grant, taken}
        """

    /// Where a meter's lease counter lives: one key per department, meter and window.
    public static func key(department: String, meter: QuotaMeter, window: Int64) -> String {
        "tollgate:lease:\(department):\(meter.headerName):\(window)"
    }
}
