/// nginx's smooth weighted round-robin (`ngx_http_upstream_get_peer`): every pick adds each
/// candidate's weight to its running score, takes the highest score, and subtracts the total
/// weight from the winner. Weights 5,1,1 give a,a,b,a,c,a,a — never a burst of one peer.
///
/// Unavailable candidates are skipped for that pick, exactly as nginx skips failed peers.
/// Pure and single-threaded: each event loop owns its own instance.
public struct SmoothWeightedRoundRobin: Sendable {
    public let weights: [Int]
    private var current: [Int]

    public init(weights: [Int]) {
        self.weights = weights
        self.current = Array(repeating: 0, count: weights.count)
    }

    /// Index of the chosen candidate, or `nil` when none is available.
    public mutating func select(isAvailable: (Int) -> Bool) -> Int? {
        var total = 0
        var best = -1
        for i in weights.indices where weights[i] > 0 && isAvailable(i) {
            current[i] += weights[i]
            total += weights[i]
            if best < 0 || current[i] > current[best] { best = i }
        }
        guard best >= 0 else { return nil }
        current[best] -= total
        return best
    }
}
