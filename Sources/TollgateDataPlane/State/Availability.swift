import TollgateCore

/// Whether one instance may receive requests, as published to the event loops.
public struct Availability: Sendable, Equatable {
    public var probeUp: Bool
    /// Monotonic nanoseconds until which the instance is ejected; 0 when it is not.
    public var ejectedUntil: UInt64
    /// What the instance reported of its own load at the last probe (`health.metrics_path`);
    /// nil when it is not read.
    public var load: InstanceLoad? = nil

    public static let up = Availability(probeUp: true, ejectedUntil: 0)

    @inline(__always)
    public func isAvailable(at now: UInt64) -> Bool { probeUp && now >= ejectedUntil }
}
