import TollgateCore
import XCTest

final class RequestScannerTests: XCTestCase {
    func scan(_ s: String) throws -> RequestSummary { try RequestScanner.scan(Array(s.utf8)) }

    func refused(_ s: String, file: StaticString = #filePath, line: UInt = #line) -> RequestBodyError? {
        do {
            let r = try scan(s)
            XCTFail("accepted \(s): \(r)", file: file, line: line)
            return nil
        } catch {
            return error as? RequestBodyError
        }
    }

    func testPicksModelAndStream() throws {
        let body = #"{"messages":[{"role":"user","content":"hi \"there\" {"}],"model":"qwen2.5-0.5b-instruct","stream":true,"top_k":1.5e3}"#
        func pick(_ s: RequestSummary) -> RequestSummary { RequestSummary(model: s.model, stream: s.stream) }
        XCTAssertEqual(pick(try scan(body)), RequestSummary(model: "qwen2.5-0.5b-instruct", stream: true))
        XCTAssertEqual(pick(try scan(#"  {"model" : "m" , "stream": false}  "#)), RequestSummary(model: "m", stream: false))
        XCTAssertEqual(try scan(#"{}"#), RequestSummary(model: nil, stream: false))
        XCTAssertEqual(try scan(#"{"model":"a\/b\u0041"}"#).model, "a/bA")
        XCTAssertEqual(pick(try scan(#"{"x":{"model":"nested","stream":true},"model":"top"}"#)), RequestSummary(model: "top", stream: false))
        XCTAssertEqual(try scan(#"{"stream":null,"v":[true,false,null,-0,0.5,1E+2,"é"]}"#).stream, false)
    }

    func testMalformedJSONIsRefused() {
        for bad in ["", "   ", "{", "{\"model\":}", "{\"model\":\"m\",}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":tru}", "{\"a\":\"x}",
                    "{\"a\":\"\u{01}\"}", "{\"a\":\"\\q\"}", "{'a':1}", "{\"a\":1} x", "{\"a\":[1,]}", "{\"a\" 1}", "{\"a\":-}"] {
            XCTAssertNotNil(refused(bad), bad)
        }
        XCTAssertEqual(refused("[1,2]")?.message, "The request body must be a JSON object.")
    }

    func testWrongTypesNameTheParameter() {
        XCTAssertEqual(refused(#"{"model":5}"#)?.param, "model")
        XCTAssertEqual(refused(#"{"model":"m","stream":"yes"}"#)?.param, "stream")
    }

    func testDepthIsBounded() {
        let deep = "{\"a\":" + String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000) + "}"
        XCTAssertTrue(refused(deep)?.message.contains("nesting too deep") ?? false)
        let ok = "{\"a\":" + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "}"
        XCTAssertNoThrow(try scan(ok))
    }

    func testPicksWhatPolicyNeeds() throws {
        let body = #"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"x":[1],"include_usage":true},"max_tokens":64,"temperature":0,"seed":7}"#
        let s = try scan(body)
        XCTAssertTrue(s.includeUsage)
        XCTAssertEqual(s.maxTokens, 64)
        XCTAssertEqual(s.temperature, 0)
        XCTAssertTrue(s.hasSeed)
        let range = try XCTUnwrap(s.promptRange)
        XCTAssertEqual(String(decoding: Array(body.utf8)[range], as: UTF8.self), #"[{"role":"user","content":"hi"}]"#)
        let other = try scan(#"{"model":"m","prompt":"x","stream_options":{"include_usage":false},"max_tokens":5,"max_completion_tokens":9,"temperature":0.7,"seed":null}"#)
        XCTAssertFalse(other.includeUsage)
        XCTAssertEqual(other.maxTokens, 9)
        XCTAssertEqual(other.temperature, 0.7)
        XCTAssertFalse(other.hasSeed)
    }

    func testPromptTextForPreviews() {
        func text(_ json: String) -> String? {
            Array(json.utf8).withUnsafeBytes { RequestScanner.promptText($0) }
        }
        XCTAssertEqual(text(#"[{"role":"system","content":"be brief"},{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":"What are \"your\" hours?"}]"#),
                       #"What are "your" hours?"#)
        XCTAssertEqual(text(#"[{"content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"here"}],"role":"user"}]"#), "look here")
        XCTAssertEqual(text(#"[{"role":"assistant","content":"only"}]"#), "only")
        XCTAssertEqual(text(#""Say hi""#), "Say hi")
        XCTAssertEqual(text(#"["one","two"]"#), "one")
        XCTAssertNil(text(#"[1,2,3]"#))
        XCTAssertNil(text(#"{"x":1}"#))
    }
}
