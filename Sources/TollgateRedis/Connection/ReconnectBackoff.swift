import NIOCore

/// The delay before each reconnect attempt: `initial` doubling up to `maximum`, each delay
/// drawn uniformly from its upper half (so replicas that lost Redis together do not reconnect
/// in lock step). Pure: the random source is injected, tests pass a fixed one.
struct ReconnectBackoff {
    let initial: TimeAmount
    let maximum: TimeAmount
    private(set) var attempts = 0

    init(initial: TimeAmount = .milliseconds(50), maximum: TimeAmount) {
        self.initial = initial
        self.maximum = max(maximum, initial)
    }

    /// The delay before the next attempt; counts the attempt.
    /// - Parameter random: returns a value in `0...1`.
    mutating func nextDelay(random: () -> Double = { Double.random(in: 0...1) }) -> TimeAmount {
        let ceiling = ceilingDelay
        attempts += 1
        let half = ceiling.nanoseconds / 2
        return .nanoseconds(half + Int64(Double(ceiling.nanoseconds - half) * min(max(random(), 0), 1)))
    }

    /// The un-jittered delay of the next attempt.
    var ceilingDelay: TimeAmount {
        // 2^attempts without overflow: stop doubling once past the maximum.
        var delay = initial.nanoseconds
        var doublings = 0
        while doublings < attempts && delay < maximum.nanoseconds {
            delay *= 2
            doublings += 1
        }
        return .nanoseconds(min(delay, maximum.nanoseconds))
    }

    /// After a successful connection.
    mutating func reset() { attempts = 0 }
}
