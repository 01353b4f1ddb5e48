/// What an instance says about its own load, read from its Prometheus metrics
/// (`health.metrics_path`, e.g. vLLM's `/metrics`):
///
/// | metric | field |
/// |---|---|
/// | `vllm:num_requests_waiting` | `waiting` |
/// | `vllm:num_requests_running` | `running` |
/// | `vllm:kv_cache_usage_perc` (older: `vllm:gpu_cache_usage_perc`) | `kvCacheUsage` (0…1) |
///
/// The text comes from outside the gateway: only these names are read, each value is parsed
/// into a bounded range (counts 0…1,000,000, whole numbers after rounding down; usage 0…1), the
/// text read is bounded (`maxBytes`), and anything else — other metrics, comments, malformed
/// lines, NaN or infinities — is skipped. Samples of one metric with several label sets (one
/// per model or engine) are added up.
public struct InstanceLoad: Sendable, Equatable {
    public var waiting: Int?
    public var running: Int?
    public var kvCacheUsage: Double?

    public init(waiting: Int? = nil, running: Int? = nil, kvCacheUsage: Double? = nil) {
        self.waiting = waiting
        self.running = running
        self.kvCacheUsage = kvCacheUsage
    }

    /// Nothing reported.
    public var isEmpty: Bool { waiting == nil && running == nil && kvCacheUsage == nil }

    /// The instance says it cannot take more now: requests wait in its own queue. The gateway
    /// then treats it as full until the next probe. (A KV cache near 100% is not enough: a full
    /// batch fills it by design, and vLLM preempts — which shows as waiting — when it must.
    /// Counting it cut a benchmark's goodput by a third.)
    public var saturated: Bool { (waiting ?? 0) > 0 }

    /// The largest metrics text read; the rest is ignored.
    public static let maxBytes = 1 << 20
    public static let maxCount = 1_000_000

    /// Parses Prometheus text exposition format (0.0.4).
    public static func parse(_ text: some StringProtocol) -> InstanceLoad {
        var load = InstanceLoad()
        var newerKV: Double?
        var olderKV: Double?
        let bounded = text.utf8.count > maxBytes ? Substring(String(decoding: Array(text.utf8.prefix(maxBytes)), as: UTF8.self)) : Substring(text)
        for rawLine in bounded.split(whereSeparator: \.isNewline) {  // "\r\n" is one Character: isNewline covers it
            let line = rawLine.drop { $0 == " " || $0 == "\t" }
            guard let first = line.first, first != "#" else { continue }
            // name{labels} value [timestamp]
            let nameEnd = line.firstIndex { $0 == "{" || $0 == " " || $0 == "\t" } ?? line.endIndex
            let name = line[..<nameEnd]
            var rest = line[nameEnd...]
            if rest.first == "{" {
                guard let close = rest.lastIndex(of: "}") else { continue }
                rest = rest[rest.index(after: close)...]
            }
            let fields = rest.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let valueText = fields.first, let value = Double(valueText), value.isFinite else { continue }
            switch name {
            case "vllm:num_requests_waiting":
                load.waiting = addCount(load.waiting, value)
            case "vllm:num_requests_running":
                load.running = addCount(load.running, value)
            case "vllm:kv_cache_usage_perc":
                newerKV = max(newerKV ?? 0, min(1, max(0, value)))
            case "vllm:gpu_cache_usage_perc":
                olderKV = max(olderKV ?? 0, min(1, max(0, value)))
            default:
                continue
            }
        }
        load.kvCacheUsage = newerKV ?? olderKV
        return load
    }

    private static func addCount(_ sum: Int?, _ value: Double) -> Int {
        let v = Int(min(Double(maxCount), max(0, value.rounded(.down))))
        return min(maxCount, (sum ?? 0) + v)
    }
}
