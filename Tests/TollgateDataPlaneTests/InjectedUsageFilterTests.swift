import NIOCore
import TollgateCore
import XCTest

@testable import TollgateDataPlane

/// The filter that takes out the usage event the gateway asked for on the client's behalf.
final class InjectedUsageFilterTests: XCTestCase {
    func run(_ parts: [String]) -> (String, Int?) {
        var filter = InjectedUsageFilter()
        var out = ""
        for part in parts {
            if let passed = filter.filter(ByteBuffer(string: part)) { out += String(buffer: passed) }
        }
        if let rest = filter.remainder() { out += String(buffer: rest) }
        return (out, filter.usage?.totalTokens)
    }

    func testTheUsageEventIsTakenOutWhateverItsSpacing() {
        let chunk = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"
        for usage in ["data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
                      // Python's json.dumps spacing (found by fuzzing): was passed on to a client that never asked.
                      "data: {\"choices\": [], \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 2}}\n\n",
                      "data: {\"choices\" :\n[ ],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n"] {
            let (out, tokens) = run([chunk, usage, "data: [DONE]\n\n"])
            XCTAssertEqual(out, chunk + "data: [DONE]\n\n", usage)
            XCTAssertEqual(tokens, 5, usage)
        }
    }

    func testEventsSplitAcrossPartsAreHeldUntilComplete() {
        let (out, tokens) = run(["data: {\"choices\":[{\"delta\":{}}]}\n", "\ndata: {\"choices\": [", "], \"usage\": {\"prompt_tokens\": 1, \"completion_tokens\": 1}}\n\n"])
        XCTAssertEqual(out, "data: {\"choices\":[{\"delta\":{}}]}\n\n")
        XCTAssertEqual(tokens, 2)
    }

    func testAskingForUsageKeepsTheBodyJSON() throws {
        for (body, expected) in [(#"{"stream":true}"#, #"{"stream":true,"stream_options":{"include_usage":true}}"#),
                                 ("{}", #"{"stream_options":{"include_usage":true}}"#),
                                 ("{ \n }", #"{ \#n "stream_options":{"include_usage":true}}"#)] {
            XCTAssertEqual(String(buffer: bodyAskingForUsage(ByteBuffer(string: body))), expected)
        }
    }
}
