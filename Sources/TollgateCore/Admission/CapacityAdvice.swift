/// The capacity panel's verdict for one pool, from the original set-up's scaling rules (add an
/// instance when the mean response time exceeds 2.5 s or upstream timeouts pile up in the
/// proxy's log) and the waiting line's own signals (sustained queueing — requests waiting and
/// how long, the signal the Gateway API Inference Extension autoscales on — and shed requests).
/// Pure: figures in, verdict and its evidence out.
public struct CapacityAdvice: Sendable, Equatable {
    /// What the ledger and the live state say about one pool over a window.
    public struct Figures: Sendable, Equatable {
        public var pool: String
        public var windowSeconds: Double
        /// Requests the pool's instances answered in the window.
        public var forwarded: Int
        /// Their mean latency, request head to end of answer, and the mean time an instance was busy with one.
        public var meanLatencyMs: Double
        public var meanBusyMs: Double
        /// 504s: no answer within `per_try` or `request`.
        public var upstreamTimeouts: Int
        /// Requests that waited for a slot, and their mean wait.
        public var waited: Int
        public var meanWaitMs: Double
        /// 503 `queue_timeout` or `queue_full`.
        public var shed: Int
        /// Live: waiting now, and the slots of the pool's instances (nil: some instance unlimited).
        public var waitingNow: Int
        public var slots: Int?

        public init(pool: String, windowSeconds: Double, forwarded: Int, meanLatencyMs: Double, meanBusyMs: Double, upstreamTimeouts: Int,
                    waited: Int, meanWaitMs: Double, shed: Int, waitingNow: Int, slots: Int?) {
            self.pool = pool
            self.windowSeconds = windowSeconds
            self.forwarded = forwarded
            self.meanLatencyMs = meanLatencyMs
            self.meanBusyMs = meanBusyMs
            self.upstreamTimeouts = upstreamTimeouts
            self.waited = waited
            self.meanWaitMs = meanWaitMs
            self.shed = shed
            self.waitingNow = waitingNow
            self.slots = slots
        }
    }

    public enum Verdict: String, Sendable, Equatable {
        case addInstances = "add_instances"
        case hasRoom = "has_room"
        case unknown
    }

    public var pool: String
    public var verdict: Verdict
    /// "pool qwen: add instances", "pool qwen: has room for about 40 more requests/s".
    public var summary: String
    /// Extra requests per second the pool could take at `targetUtilization` (has_room only).
    public var roomPerSecond: Int?
    /// The rules that fired, or why there is room: one line each.
    public var evidence: [String]

    /// The original set-up's threshold.
    public static let maxMeanLatencyMs = 2_500.0
    /// Queueing is "sustained" when more than this share of requests waited, for this long on average.
    public static let sustainedWaitShare = 0.2
    public static let sustainedMeanWaitMs = 500.0
    /// Utilisation the room is computed to: slots at 80% busy leave a margin for bursts.
    public static let targetUtilization = 0.8

    public init(_ f: Figures) {
        pool = f.pool
        var reasons: [String] = []
        let total = f.forwarded + f.shed
        if f.forwarded > 0 && f.meanLatencyMs > Self.maxMeanLatencyMs {
            reasons.append("mean latency \(Self.seconds(f.meanLatencyMs)) is over 2.5 s")
        }
        if f.upstreamTimeouts >= max(3, total / 100) {
            reasons.append("\(f.upstreamTimeouts) upstream timeouts")
        }
        if total > 0 && Double(f.waited) > Self.sustainedWaitShare * Double(total) && f.meanWaitMs >= Self.sustainedMeanWaitMs {
            reasons.append("sustained queueing: \(f.waited) of \(total) requests waited, \(Self.seconds(f.meanWaitMs)) on average")
        }
        if f.shed > 0 {
            reasons.append("\(f.shed) requests shed (queue timeout or full)")
        }
        if !reasons.isEmpty {
            if f.waitingNow > 0 { reasons.append("\(f.waitingNow) waiting now") }
            verdict = .addInstances
            summary = "pool \(f.pool): add instances"
            roomPerSecond = nil
            evidence = reasons
            return
        }
        // Little's law: slots kept busy `targetUtilization` of the time serve slots × u / busy time.
        guard let slots = f.slots, slots > 0, f.forwarded > 0, f.meanBusyMs > 0, f.windowSeconds > 0 else {
            verdict = .unknown
            summary = f.slots == nil ? "pool \(f.pool): no max_in_flight set, its room is unknown" : "pool \(f.pool): no traffic to judge by"
            roomPerSecond = nil
            evidence = f.forwarded > 0 ? ["mean latency \(Self.seconds(f.meanLatencyMs)), no timeouts, no queueing"] : []
            return
        }
        let rate = Double(f.forwarded) / f.windowSeconds
        let capacity = Double(slots) * Self.targetUtilization / (f.meanBusyMs / 1000)
        let room = max(0, Int((capacity - rate).rounded(.down)))
        verdict = .hasRoom
        roomPerSecond = room
        summary = "pool \(f.pool): has room for about \(room) more requests/s"
        evidence = [
            "mean latency \(Self.seconds(f.meanLatencyMs)) (limit 2.5 s), \(f.upstreamTimeouts) upstream timeouts, \(f.shed) shed",
            "\(Self.decimal(rate)) requests/s now; \(slots) slots × \(Int(Self.targetUtilization * 100))% ÷ \(Self.seconds(f.meanBusyMs)) busy each ≈ \(Int(capacity)) requests/s",
        ]
    }

    static func seconds(_ ms: Double) -> String { decimal(ms / 1000, places: 2) + " s" }

    static func decimal(_ v: Double, places: Int = 1) -> String {
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let r = (v * scale).rounded() / scale
        var text = "\(r)"
        if let dot = text.firstIndex(of: ".") {
            let decimals = text[text.index(after: dot)...].count
            if decimals < places { text += String(repeating: "0", count: places - decimals) }
        }
        return text
    }
}
