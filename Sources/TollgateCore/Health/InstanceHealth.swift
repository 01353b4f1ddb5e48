/// Health of one instance: a pure state machine driven by observations and an injected time
/// (`now`, nanoseconds of a monotonic clock). No I/O.
///
/// - Passive (nginx `max_fails`/`fail_timeout`): `maxFails` failures within `failTimeout`
///   eject the instance for `failTimeout`. When it comes back it is on probation for another
///   `failTimeout`: one failure then ejects it again at once.
/// - Active: `unhealthyThreshold` consecutive failed probes mark it down,
///   `healthyThreshold` consecutive good probes mark it up (and end any ejection: the probe
///   just showed it alive). Flips need consecutive results, as Pingora's `flip_threshold`.
public struct InstanceHealth: Sendable, Equatable {
    public struct Settings: Sendable, Equatable {
        public var maxFails: Int
        public var failTimeoutNanos: UInt64
        public var unhealthyThreshold: Int
        public var healthyThreshold: Int

        public init(maxFails: Int, failTimeoutNanos: UInt64, unhealthyThreshold: Int, healthyThreshold: Int) {
            self.maxFails = maxFails
            self.failTimeoutNanos = failTimeoutNanos
            self.unhealthyThreshold = unhealthyThreshold
            self.healthyThreshold = healthyThreshold
        }

        public init(_ s: HealthSettings) {
            self.init(
                maxFails: s.maxFails, failTimeoutNanos: UInt64(max(0, s.failTimeout.nanoseconds)),
                unhealthyThreshold: s.unhealthyThreshold, healthyThreshold: s.healthyThreshold)
        }
    }

    /// What a transition means for the routing snapshot and the log.
    public enum Action: Sendable, Equatable {
        case none
        case ejected(until: UInt64)
        case markedDown
        case markedUp
    }

    public var settings: Settings
    /// Times of the failures still inside the window, oldest first (at most `maxFails`).
    public private(set) var recentFailures: [UInt64] = []
    public private(set) var ejectedUntil: UInt64?
    public private(set) var probationUntil: UInt64?
    public private(set) var probeUp = true
    public private(set) var consecutiveProbeFailures = 0
    public private(set) var consecutiveProbeSuccesses = 0
    /// How many times the instance has been ejected since the gateway started.
    public private(set) var ejections = 0

    public init(settings: Settings) {
        self.settings = settings
    }

    /// Whether a request may be sent to the instance at `now`.
    public func isAvailable(at now: UInt64) -> Bool {
        probeUp && (ejectedUntil.map { now >= $0 } ?? true)
    }

    /// A request to the instance failed (connect error, timeout, 502/503/504).
    public mutating func recordFailure(at now: UInt64) -> Action {
        guard settings.maxFails > 0 else { return .none }
        if let until = ejectedUntil, now < until { return .none }  // already out
        if let until = probationUntil, now < until {
            return eject(at: now)
        }
        recentFailures.removeAll { now >= $0 && now - $0 >= settings.failTimeoutNanos }
        recentFailures.append(now)
        if recentFailures.count >= settings.maxFails {
            return eject(at: now)
        }
        return .none
    }

    private mutating func eject(at now: UInt64) -> Action {
        let until = now + settings.failTimeoutNanos
        ejectedUntil = until
        probationUntil = until + settings.failTimeoutNanos
        recentFailures.removeAll()
        ejections += 1
        return .ejected(until: until)
    }

    /// The result of an active probe.
    public mutating func recordProbe(success: Bool, at now: UInt64) -> Action {
        if success {
            consecutiveProbeFailures = 0
            consecutiveProbeSuccesses += 1
            if !probeUp && consecutiveProbeSuccesses >= settings.healthyThreshold {
                probeUp = true
                ejectedUntil = nil
                probationUntil = nil
                recentFailures.removeAll()
                return .markedUp
            }
        } else {
            consecutiveProbeSuccesses = 0
            consecutiveProbeFailures += 1
            if probeUp && consecutiveProbeFailures >= settings.unhealthyThreshold {
                probeUp = false
                return .markedDown
            }
        }
        return .none
    }
}
