import TollgateCore
import XCTest

/// An instance's Prometheus text is outside input: only vLLM's load metrics are read, each into
/// a bounded range.
final class InstanceLoadTests: XCTestCase {
    func testReadsVLLMsLoadMetrics() {
        let text = """
            # HELP vllm:num_requests_waiting Number of requests waiting to be processed.
            # TYPE vllm:num_requests_waiting gauge
            vllm:num_requests_waiting{engine="0",model_name="qwen2.5-0.5b-instruct"} 3.0
            vllm:num_requests_running{engine="0",model_name="qwen2.5-0.5b-instruct"} 10.0
            vllm:kv_cache_usage_perc{engine="0",model_name="qwen2.5-0.5b-instruct"} 0.42
            vllm:prompt_tokens_total{model_name="qwen2.5-0.5b-instruct"} 123456.0
            """
        let load = InstanceLoad.parse(text)
        XCTAssertEqual(load, InstanceLoad(waiting: 3, running: 10, kvCacheUsage: 0.42))
        XCTAssertTrue(load.saturated, "requests wait inside the instance")
        XCTAssertFalse(InstanceLoad.parse("vllm:num_requests_waiting 0\nvllm:num_requests_running 4\n").saturated)
    }

    func testTheOlderCacheNameAndSeveralEnginesAddUp() {
        let text = "vllm:gpu_cache_usage_perc{a=\"b\"} 0.5\r\nvllm:num_requests_running{engine=\"0\"} 2\r\nvllm:num_requests_running{engine=\"1\"} 3 1700000000000\r\n"
        XCTAssertEqual(InstanceLoad.parse(text), InstanceLoad(waiting: nil, running: 5, kvCacheUsage: 0.5))
        XCTAssertEqual(InstanceLoad.parse("vllm:gpu_cache_usage_perc 0.2\nvllm:kv_cache_usage_perc 0.7").kvCacheUsage, 0.7, "the newer name wins")
        XCTAssertFalse(InstanceLoad.parse("vllm:kv_cache_usage_perc 1.0").saturated, "a full batch fills the cache by design")
    }

    func testHostileNumbersAreBoundedOrSkipped() {
        let text = """
            vllm:num_requests_waiting NaN
            vllm:num_requests_running +Inf
            vllm:kv_cache_usage_perc -3
            vllm:num_requests_waiting{x="}"} 1e300
            vllm:num_requests_running{unterminated 5
            vllm:num_requests_running -7
            garbage line without value
            vllm:num_requests_waiting
            """
        let load = InstanceLoad.parse(text)
        XCTAssertEqual(load.waiting, InstanceLoad.maxCount)
        XCTAssertEqual(load.running, 0)
        XCTAssertEqual(load.kvCacheUsage, 0)
        XCTAssertEqual(InstanceLoad.parse("vllm:kv_cache_usage_perc 57").kvCacheUsage, 1)
        var many = ""
        for _ in 0..<3000 { many += "vllm:num_requests_waiting 1000000\n" }
        XCTAssertEqual(InstanceLoad.parse(many).waiting, InstanceLoad.maxCount, "sums saturate")
        XCTAssertTrue(InstanceLoad.parse("").isEmpty)
        XCTAssertTrue(InstanceLoad.parse(String(repeating: "#", count: InstanceLoad.maxBytes + 10)).isEmpty)
    }
}
