import Foundation

/// A department's limits (`departments[].quota` in `routes/`); nil means unlimited.
public struct QuotaLimits: Sendable, Equatable {
    public var requestsPerMinute: Int?
    public var tokensPerMinute: Int?
    public var tokensPerDay: Int?
    public var tokensPerMonth: Int?

    public init(requestsPerMinute: Int? = nil, tokensPerMinute: Int? = nil, tokensPerDay: Int? = nil, tokensPerMonth: Int? = nil) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.tokensPerDay = tokensPerDay
        self.tokensPerMonth = tokensPerMonth
    }

    public var isUnlimited: Bool { requestsPerMinute == nil && tokensPerMinute == nil && tokensPerDay == nil && tokensPerMonth == nil }

    /// The limit of one meter.
    public func limit(_ meter: QuotaMeter) -> Int? {
        switch meter {
        case .requestsPerMinute: requestsPerMinute
        case .tokensPerMinute: tokensPerMinute
        case .tokensPerDay: tokensPerDay
        case .tokensPerMonth: tokensPerMonth
        }
    }
}

/// Settings that apply to every department's quotas (`quotas:` in `routes/`).
public struct QuotaSettings: Sendable, Equatable {
    /// Calendar days and months are counted in this time zone.
    public var timeZone: TimeZone = TimeZone(identifier: "UTC")!
    /// Completion tokens reserved for a request that sets no `max_tokens`.
    public var defaultMaxTokens = 1024
    /// With Redis, how often each replica adds its use to the shared counters and reads back
    /// the total. Replicas can overshoot a limit by what they admit within one interval.
    public var syncInterval: Duration = .milliseconds(100)
    /// With Redis, the largest slice of a meter a replica leases at a time (`quotas.lease`,
    /// a percentage of the limit, default 1%): the fleet overshoots a limit by at most
    /// replicas × slice (see `QuotaLeasePolicy`).
    public var lease = QuotaLeasePolicy()
    public init() {}
}

/// The four things a department's use is counted by.
public enum QuotaMeter: Int, Sendable, CaseIterable {
    case requestsPerMinute, tokensPerMinute, tokensPerDay, tokensPerMonth

    public var window: QuotaWindow {
        switch self {
        case .requestsPerMinute, .tokensPerMinute: .minute
        case .tokensPerDay: .day
        case .tokensPerMonth: .month
        }
    }

    /// The suffix of its `x-ratelimit-*` headers.
    public var headerName: String {
        switch self {
        case .requestsPerMinute: "requests"
        case .tokensPerMinute: "tokens"
        case .tokensPerDay: "tokens-day"
        case .tokensPerMonth: "tokens-month"
        }
    }
}

public enum QuotaWindow: Sendable {
    case minute, day, month
}

/// The current calendar minute, day and month at a wall time, in a time zone — with the
/// boundaries cached so that the common call is two comparisons, not a calendar computation.
/// Pure: the time is passed in, so tests drive it.
public struct QuotaCalendar: Sendable {
    public struct Current: Sendable, Equatable {
        /// Window numbers: minutes since the epoch, days and months since the epoch in the zone.
        public var minute: Int64
        public var day: Int64
        public var month: Int64
        /// Unix ms when each window started and ends.
        public var minuteStart: Int64, minuteEnd: Int64
        public var dayStart: Int64, dayEnd: Int64
        public var monthStart: Int64, monthEnd: Int64

        public func index(_ w: QuotaWindow) -> Int64 {
            switch w {
            case .minute: minute
            case .day: day
            case .month: month
            }
        }

        public func end(_ w: QuotaWindow) -> Int64 {
            switch w {
            case .minute: minuteEnd
            case .day: dayEnd
            case .month: monthEnd
            }
        }

        public func start(_ w: QuotaWindow) -> Int64 {
            switch w {
            case .minute: minuteStart
            case .day: dayStart
            case .month: monthStart
            }
        }
    }

    private let calendar: Calendar
    private var cached: Current?
    /// The zone the days and months are counted in.
    public let timeZone: TimeZone

    public init(timeZone: TimeZone) {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = timeZone
        self.calendar = c
        self.timeZone = timeZone
    }

    /// The windows at `now` in `timeZone`, for holders that follow the configuration: a changed
    /// zone (a reload) starts the calendar afresh, the same zone keeps its cached boundaries.
    public mutating func current(atMs now: Int64, in timeZone: TimeZone) -> Current {
        if timeZone != self.timeZone { self = QuotaCalendar(timeZone: timeZone) }
        return current(atMs: now)
    }

    public mutating func current(atMs now: Int64) -> Current {
        if var c = cached, now >= c.dayStart, now < c.dayEnd {
            if now >= c.minuteEnd || now < c.minuteStart {
                c.minute = now / 60_000
                c.minuteStart = c.minute * 60_000
                c.minuteEnd = c.minuteStart + 60_000
                cached = c
            }
            return c
        }
        let date = Date(timeIntervalSince1970: Double(now) / 1000)
        let day = calendar.startOfDay(for: date)
        let nextDay = calendar.date(byAdding: .day, value: 1, to: day)!
        let comps = calendar.dateComponents([.year, .month], from: date)
        let month = calendar.date(from: comps)!
        let nextMonth = calendar.date(byAdding: .month, value: 1, to: month)!
        let minute = now / 60_000
        let c = Current(
            minute: minute, day: Int64((day.timeIntervalSince1970 / 86_400).rounded(.down)),
            month: Int64((comps.year! - 1970) * 12 + comps.month! - 1),
            minuteStart: minute * 60_000, minuteEnd: minute * 60_000 + 60_000,
            dayStart: Int64(day.timeIntervalSince1970 * 1000), dayEnd: Int64(nextDay.timeIntervalSince1970 * 1000),
            monthStart: Int64(month.timeIntervalSince1970 * 1000), monthEnd: Int64(nextMonth.timeIntervalSince1970 * 1000))
        cached = c
        return c
    }
}

/// The range every quota amount lives in: what a counter holds, a reservation, a settlement.
/// Amounts saturate at `max` instead of overflowing: an overflow traps, and a trap ends every
/// department's traffic. 2^40 tokens is ~1,000 years of one instance at full speed.
public enum QuotaAmount {
    public static let max = (1 << 40) - 1

    /// `value` clamped into `0...max`.
    @inline(__always)
    public static func clamp(_ value: Int) -> Int { Swift.min(Swift.max(0, value), max) }

    /// `a + b`, clamped into `0...max`, never trapping.
    @inline(__always)
    public static func add(_ a: Int, _ b: Int) -> Int {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? (b > 0 ? max : 0) : clamp(sum)
    }
}

/// What admission costs before the answer is known: an estimate of the prompt's tokens (four
/// bytes of JSON per token, a deliberately generous figure) plus the completion tokens the
/// request may produce (`max_tokens`, or the default, for each of its `n` choices). Saturates
/// at `QuotaAmount.max`; the scanner has bounded the inputs already, this holds for any.
public func reservationEstimate(promptBytes: Int, maxTokens: Int?, choices: Int? = nil, defaultMaxTokens: Int) -> Int {
    let prompt = Swift.max(1, promptBytes / 4)
    let perChoice = QuotaAmount.clamp(maxTokens ?? defaultMaxTokens)
    let (completion, overflow) = perChoice.multipliedReportingOverflow(by: QuotaAmount.clamp(Swift.max(1, choices ?? 1)))
    return QuotaAmount.add(QuotaAmount.clamp(prompt), overflow ? QuotaAmount.max : QuotaAmount.clamp(completion))
}
