import Foundation

/// Wall-clock time in Unix milliseconds. Passed in where tests need to drive it (quota windows,
/// the admin overview, quota seeding); `wallClockMs` is the system's.
public typealias WallClock = @Sendable () -> Int64

/// The system's wall clock: Unix time in milliseconds. The gateway's one reading of it (the
/// data plane's rows, key expiry and cache ages; quota windows; the admin page; reports).
@inlinable
public func wallClockMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
