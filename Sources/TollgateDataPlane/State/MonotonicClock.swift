/// Monotonic time in nanoseconds; injected so that tests can drive time.
public typealias MonotonicClock = @Sendable () -> UInt64
