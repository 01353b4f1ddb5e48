/// Weighted least-in-flight, as Envoy's least-request balancer with unequal weights: each pick
/// runs a smooth weighted round-robin step over the effective weights
/// `weight / (inFlight + 1)`. Idle instances get their configured shares; a busy instance's
/// share shrinks with its queue, so slow or saturated instances receive less.
public struct WeightedLeastInFlight: Sendable {
    public let weights: [Int]
    private var current: [Double]

    public init(weights: [Int]) {
        self.weights = weights
        self.current = Array(repeating: 0, count: weights.count)
    }

    public mutating func select(isAvailable: (Int) -> Bool, inFlight: (Int) -> Int) -> Int? {
        var total = 0.0
        var best = -1
        for i in weights.indices where weights[i] > 0 && isAvailable(i) {
            let effective = Double(weights[i]) / Double(inFlight(i) + 1)
            current[i] += effective
            total += effective
            if best < 0 || current[i] > current[best] { best = i }
        }
        guard best >= 0 else { return nil }
        current[best] -= total
        return best
    }
}

/// The balancing state of one department over one pool, on one event loop.
public enum Balancer: Sendable {
    case roundRobin(SmoothWeightedRoundRobin)
    case leastInFlight(WeightedLeastInFlight)

    public init(policy: BalancingPolicy, weights: [Int]) {
        switch policy {
        case .roundRobin: self = .roundRobin(SmoothWeightedRoundRobin(weights: weights))
        case .leastInFlight: self = .leastInFlight(WeightedLeastInFlight(weights: weights))
        }
    }

    /// Index into the candidate list, or `nil` when no candidate is available.
    public mutating func select(isAvailable: (Int) -> Bool, inFlight: (Int) -> Int) -> Int? {
        switch self {
        case .roundRobin(var b):
            let r = b.select(isAvailable: isAvailable)
            self = .roundRobin(b)
            return r
        case .leastInFlight(var b):
            let r = b.select(isAvailable: isAvailable, inFlight: inFlight)
            self = .leastInFlight(b)
            return r
        }
    }
}
