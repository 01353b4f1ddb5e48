import TollgateCore
import XCTest

final class UsageScannerTests: XCTestCase {
    func usage(_ s: String) -> TokenUsage? { UsageScanner.lastUsage(in: Array(s.utf8)) }

    func testJSONAnswer() {
        let body = #"{"id":"x","choices":[{"message":{"content":"the \"usage\":{\"prompt_tokens\":999} trick"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"prompt_tokens_details":{"cached_tokens":0}}}"#
        XCTAssertEqual(usage(body), TokenUsage(promptTokens: 12, completionTokens: 34))
    }

    func testStreamFinalChunk() {
        let events = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\": {\"prompt_tokens\": 5, \"completion_tokens\": 7}}\n\ndata: [DONE]\n\n"
        XCTAssertEqual(usage(events), TokenUsage(promptTokens: 5, completionTokens: 7))
    }

    func testAbsentOrNull() {
        XCTAssertNil(usage(#"{"choices":[],"usage":null}"#))
        XCTAssertNil(usage(#"{"choices":[]}"#))
        XCTAssertNil(usage(""))
        XCTAssertNil(usage(#"{"usage":{"prompt_tokens":"#))
    }

    func testEmbeddingsHaveNoCompletionTokens() {
        XCTAssertEqual(usage(#"{"data":[],"usage":{"prompt_tokens":3,"total_tokens":3}}"#), TokenUsage(promptTokens: 3, completionTokens: 0))
    }
}
