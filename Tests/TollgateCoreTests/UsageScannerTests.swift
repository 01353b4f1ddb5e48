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

final class UsageWatcherTests: XCTestCase {
    func feed(_ parts: [String]) -> TokenUsage? {
        var w = UsageWatcher()
        for p in parts { Array(p.utf8).withUnsafeBytes { w.feed($0) } }
        return w.usage
    }

    func testUsageAnywhereInALongAnswer() {
        // Usage first, then more than 8 KB of other members: the old tail-only scan missed it.
        let filler = String(repeating: "x", count: 20_000)
        let body = #"{"id":"a","usage":{"prompt_tokens":7,"completion_tokens":24,"total_tokens":31},"choices":[{"message":{"content":""# + filler + #""}}]}"#
        XCTAssertEqual(feed([body]), TokenUsage(promptTokens: 7, completionTokens: 24))
        // The same in parts of every size, split inside the member name and the object.
        for size in [1, 3, 7, 100, 4096] {
            var parts: [String] = []
            var rest = Substring(body)
            while !rest.isEmpty { parts.append(String(rest.prefix(size))); rest = rest.dropFirst(size) }
            XCTAssertEqual(feed(parts), TokenUsage(promptTokens: 7, completionTokens: 24), "parts of \(size)")
        }
    }

    func testTheLastUsageWinsAndQuotedOnesDoNotCount() {
        XCTAssertEqual(feed([#"data: {"usage":{"prompt_tokens":1,"completion_tokens":1}}"#, "\n\n",
                             #"data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9}}"#, "\n\n"]),
                       TokenUsage(promptTokens: 5, completionTokens: 9))
        XCTAssertNil(feed([#"{"content":"say \"usage\":{\"prompt_tokens\":99} please"}"#]))
    }

    /// Found by fuzzing: with two `"usage"` keys whose objects were open when a part ended, only
    /// the later one was kept, and the earlier object, closing in a later part, was lost.
    func testAnOpenUsageObjectIsKeptWithWhatItHolds() {
        let body = #"{"usage":{"prompt_tokens":9,"completion_tokens":2,"note":""usage":{"prompt_tokens":1"},"x":1}"#
        let whole = feed([body])
        XCTAssertEqual(whole, TokenUsage(promptTokens: 9, completionTokens: 2))
        for size in [5, 20, 33, 40] {
            var parts: [String] = []
            var rest = Substring(body)
            while !rest.isEmpty { parts.append(String(rest.prefix(size))); rest = rest.dropFirst(size) }
            XCTAssertEqual(feed(parts), whole, "parts of \(size)")
        }
    }

    /// An answer's last part, marked as such (its `Content-Length` is reached), finds the same
    /// usage whether the answer came whole or in parts, and keeps nothing for a part to come.
    func testTheLastPartFindsTheSameUsage() {
        let body = #"{"id":"a","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":7,"completion_tokens":24,"total_tokens":31}}"#
        for size in [1, 9, 50, body.utf8.count] {
            var parts: [String] = []
            var rest = Substring(body)
            while !rest.isEmpty { parts.append(String(rest.prefix(size))); rest = rest.dropFirst(size) }
            var w = UsageWatcher()
            for (k, p) in parts.enumerated() { Array(p.utf8).withUnsafeBytes { w.feed($0, last: k == parts.count - 1) } }
            XCTAssertEqual(w.usage, TokenUsage(promptTokens: 7, completionTokens: 24), "parts of \(size)")
        }
    }
}
