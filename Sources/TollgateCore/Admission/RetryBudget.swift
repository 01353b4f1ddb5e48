/// How many retries may be under way at once, as Envoy's retry budgets
/// (`retry_budget: {budget_percent, min_retry_concurrency}`): at most `fraction` of the requests
/// in flight, but always at least `minimum`. When the instances are overloaded every request
/// fails at once; without a budget each would be sent two or three times, tripling the load
/// exactly when there is none to spare.
public struct RetryBudget: Sendable, Equatable {
    /// Per mille of the requests in flight that may be retries (0…1000).
    public var perMille: Int
    /// Retries always allowed at once, whatever the fraction gives.
    public var minimum: Int

    public init(perMille: Int = 200, minimum: Int = 3) {
        self.perMille = min(1000, max(0, perMille))
        self.minimum = max(0, minimum)
    }

    /// Whether one more retry may start while `retrying` retries and `inFlight` requests are
    /// under way (the numbers of one event loop, each loop having its own budget).
    public func allows(retrying: Int, inFlight: Int) -> Bool {
        let n = max(0, inFlight)
        let byFraction = n / 1000 * perMille + n % 1000 * perMille / 1000  // no overflow for any n
        return max(0, retrying) < max(minimum, byFraction)
    }
}

/// An instance's concurrency limit split over the event loops exactly: `limit` slots over
/// `loops` loops give each loop `limit / loops`, and the `limit % loops` left over go one each
/// to loops chosen by the instance's index, so that a pool of limits smaller than the number of
/// loops still spreads its slots over all loops (3 over 2 loops is 2 + 1, never 2 + 2).
public enum SlotShare {
    /// The share of loop `loop` (0-based) of `limit` slots of instance `instance`; 0 for
    /// `limit == 0`, meaning unlimited.
    public static func of(limit: Int, loops: Int, loop: Int, instance: Int) -> Int {
        guard limit > 0 else { return 0 }
        let n = max(1, loops)
        let rest = limit % n
        let offset = ((loop - instance) % n + n) % n
        return limit / n + (offset < rest ? 1 : 0)
    }
}
