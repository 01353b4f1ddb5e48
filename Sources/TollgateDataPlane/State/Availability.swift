/// Whether one instance may receive requests, as published to the event loops.
public struct Availability: Sendable, Equatable {
    public var probeUp: Bool
    /// Monotonic nanoseconds until which the instance is ejected; 0 when it is not.
    public var ejectedUntil: UInt64

    public static let up = Availability(probeUp: true, ejectedUntil: 0)

    @inline(__always)
    public func isAvailable(at now: UInt64) -> Bool { probeUp && now >= ejectedUntil }
}
