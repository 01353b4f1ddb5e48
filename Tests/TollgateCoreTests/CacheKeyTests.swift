import TollgateCore
import XCTest

final class CacheKeyTests: XCTestCase {
    private func canonical(_ s: String) throws -> String {
        String(decoding: try CanonicalJSON.canonicalize(Array(s.utf8)), as: UTF8.self)
    }

    private func key(_ body: String, namespace: String = "department:a", endpoint: String = "/v1/chat/completions",
                     model: String = "qwen") throws -> CacheKey {
        CacheKey.make(namespace: namespace, endpoint: endpoint, model: model,
                      canonicalBody: try CanonicalJSON.canonicalize(Array(body.utf8)))
    }

    private let base = #"{"model":"qwen","messages":[{"role":"user","content":"Hello"}],"temperature":0,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"user":{"type":"string"}}}}}]}"#

    func testCanonicalForm() throws {
        XCTAssertEqual(try canonical(#" { "b" : [1 , {"z":null,"a":true}], "a":"x" } "#), #"{"a":"x","b":[1,{"a":true,"z":null}]}"#)
        // Keys sort by UTF-8 bytes: upper case before lower case, "é" (C3 A9) after "z".
        XCTAssertEqual(try canonical(#"{"é":1,"z":2,"Z":3,"a":4}"#), #"{"Z":3,"a":4,"z":2,"é":1}"#)
        // One escaping: only quote, backslash and control characters, lower-case hex.
        XCTAssertEqual(try canonical(#"["a\"b\\c\/d\n\u001F\u00e9\ud83d\ude00é"]"#), "[\"a\\\"b\\\\c/d\\u000a\\u001f\u{e9}\u{1F600}\u{e9}\"]")
        // Duplicate names: the last one wins, as in Python's json.
        XCTAssertEqual(try canonical(#"{"a":1,"a":2}"#), #"{"a":2}"#)
        // Dropped at the top level only.
        XCTAssertEqual(try canonical(#"{"stream":true,"stream_options":{"include_usage":true},"user":"u","x":{"user":"kept","stream":1}}"#),
                       #"{"x":{"stream":1,"user":"kept"}}"#)
        XCTAssertEqual(String(decoding: try CanonicalJSON.canonicalize(Array(#"{"user":"u"}"#.utf8), dropping: []), as: UTF8.self), #"{"user":"u"}"#)
    }

    func testNumbersCompareByExactValue() throws {
        let cases: [(String, String)] = [
            ("0", "0"), ("-0", "0"), ("0.0", "0"), ("0e5", "0"), ("-0.000", "0"),
            ("1", "1"), ("1.0", "1"), ("1e0", "1"), ("10E-1", "1"), ("0.1e1", "1"), ("1.000e+0", "1"),
            ("0.50", "0.5"), ("5e-1", "0.5"), ("-2.50", "-2.5"), ("123.4500", "123.45"),
            ("1e3", "1000"), ("1.5e2", "150"), ("100", "100"),
            ("1e20", "100000000000000000000"), ("1e21", "1e21"), ("12e20", "1.2e21"),
            ("0.0000001", "0.0000001"), ("1e-8", "1e-8"), ("1.5E-9", "1.5e-9"),
            ("9007199254740993", "9007199254740993"),
            ("0.10000000000000001", "0.10000000000000001"),
        ]
        for (input, expected) in cases {
            XCTAssertEqual(try canonical("[\(input)]"), "[\(expected)]", input)
        }
        // JSON types stay distinct: true is not 1, "0" is not 0, null is not 0.
        XCTAssertNotEqual(try key(#"{"temperature":true}"#), try key(#"{"temperature":1}"#))
        XCTAssertNotEqual(try key(#"{"temperature":"0"}"#), try key(#"{"temperature":0}"#))
        XCTAssertNotEqual(try key(#"{"temperature":null}"#), try key(#"{"temperature":0}"#))
        XCTAssertEqual(try key(#"{"temperature":0}"#), try key(#"{"temperature":0.0}"#))
        XCTAssertEqual(try key(#"{"max_tokens":16}"#), try key(#"{"max_tokens":16.0}"#))
        XCTAssertNotEqual(try key(#"{"temperature":0.1}"#), try key(#"{"temperature":0.10000000000000001}"#))
    }

    func testOrderAndWhitespaceDoNotChangeTheKey() throws {
        let reordered = #"""
        {
          "tools" : [ { "function" : { "parameters" : { "properties" : { "user" : { "type" : "string" } }, "type" : "object" }, "name" : "f" }, "type" : "function" } ],
          "temperature" : 0.0,
          "messages" : [ { "content" : "Hello", "role" : "user" } ],
          "model" : "qwen"
        }
        """#
        XCTAssertEqual(try key(base), try key(reordered))
        XCTAssertEqual(try key(base).hex.count, 64)
        XCTAssertEqual(try key(base).redisKey, "tollgate:cache:" + (try key(base).hex))
    }

    func testDeliveryFieldsDoNotChangeTheKey() throws {
        let streamed = String(base.dropLast()) + #","stream":true,"stream_options":{"include_usage":true},"user":"alice"}"#
        XCTAssertEqual(try key(base), try key(streamed))
    }

    func testAnswerFieldsChangeTheKey() throws {
        let open = String(base.dropLast())
        let variants: [String] = [
            base.replacingOccurrences(of: #""temperature":0"#, with: #""temperature":0.7"#),
            base.replacingOccurrences(of: "Hello", with: "Hello!"),
            base.replacingOccurrences(of: #""role":"user""#, with: #""role":"system""#),
            base.replacingOccurrences(of: #""user":{"type":"string"}"#, with: #""user":{"type":"integer"}"#),
            open + #","seed":1}"#,
            open + #","max_tokens":5}"#,
            open + #","stop":["\n"]}"#,
            open + #","response_format":{"type":"json_object"}}"#,
            open + #","tool_choice":"none"}"#,
            open + #","top_p":0.5}"#,
        ]
        var keys: Set<CacheKey> = [try key(base)]
        for variant in variants {
            XCTAssertNotEqual(variant, base)
            XCTAssertTrue(keys.insert(try key(variant)).inserted, variant)
        }
        XCTAssertNotEqual(try key(base), try key(base, model: "other"))
        XCTAssertNotEqual(try key(base), try key(base, namespace: "department:b"))
        XCTAssertNotEqual(try key(base), try key(base, namespace: "shared"))
        XCTAssertNotEqual(try key(base), try key(base, endpoint: "/v1/completions"))
    }

    func testLengthPrefixesKeepTuplesApart() {
        let a = CacheKey.make(namespace: "ab", endpoint: "c", model: "m", canonicalBody: [])
        let b = CacheKey.make(namespace: "a", endpoint: "bc", model: "m", canonicalBody: [])
        let c = CacheKey.make(namespace: "a", endpoint: "b", model: "cm", canonicalBody: [])
        let d = CacheKey.make(namespace: "a", endpoint: "b", model: "c", canonicalBody: Array("m".utf8))
        XCTAssertEqual(Set([a, b, c, d]).count, 4)
        XCTAssertEqual(a, CacheKey.make(namespace: "ab", endpoint: "c", model: "m", canonicalBody: []))
    }

    func testUnicodeEscapesEqualRawUTF8() throws {
        let raw = #"{"messages":[{"role":"user","content":"Grüße 😀 \"x\"/"}]}"#
        let escaped = #"{"messages":[{"role":"user","content":"Gr\u00FC\u00dfe \ud83d\uDE00 \u0022x\"\/"}]}"#
        XCTAssertEqual(try key(raw), try key(escaped))
        // Canonically equivalent but different code points stay different JSON strings.
        XCTAssertNotEqual(try key(#"["\u00e9"]"#), try key(#"["e\u0301"]"#))
    }

    func testInvalidJSONThrows() {
        let invalid = [
            "", " ", "{", "}", #"{"a":1,}"#, "[1,]", #"{"a" 1}"#, #"{a:1}"#, "[01]", "[1.]", "[.5]", "[-]", "[1e]",
            "[+1]", "[NaN]", "[Infinity]", "[tru]", "[nul]", #"["a"#, #"["\x"]"#, #"["\u12"]"#, "[\"a\u{1}\"]",
            #"["\ud83d"]"#, #"["\ude00"]"#, #"["\ud83d\u0041"]"#, "{} {}", "[1] x", "'a'", "[1e9999999999]",
            String(repeating: "[", count: 300) + String(repeating: "]", count: 300),
        ]
        for s in invalid {
            XCTAssertThrowsError(try CanonicalJSON.canonicalize(Array(s.utf8)), s)
        }
        XCTAssertThrowsError(try CanonicalJSON.canonicalize([UInt8(ascii: "\""), 0xC3, 0x28, UInt8(ascii: "\"")]))
        XCTAssertThrowsError(try CanonicalJSON.canonicalize([UInt8(ascii: "\""), 0xFF, UInt8(ascii: "\"")]))
        XCTAssertNoThrow(try CanonicalJSON.canonicalize(Array((String(repeating: "[", count: 200) + String(repeating: "]", count: 200)).utf8)))
        XCTAssertEqual(try canonical(" \t\r\n\"x\" "), "\"x\"")
    }

    func testCanonicalFormIsIdempotentAndFastOnLargeBodies() throws {
        var messages: [String] = []
        for i in 0..<4000 {
            messages.append(#"{ "role" : "user", "content" : "message \#(i): caf\u00e9 😀 \"quoted\" \n more text to make it long", "n": \#(i).50 }"#)
        }
        let body = Array(#"{"temperature":0.0,"messages":["#.utf8) + Array(messages.joined(separator: ",").utf8) + Array("]}".utf8)
        let once = try CanonicalJSON.canonicalize(body)
        XCTAssertEqual(try CanonicalJSON.canonicalize(once), once)
        XCTAssertTrue(String(decoding: once, as: UTF8.self).hasPrefix(#"{"messages":[{"content":"message 0: café 😀 \"quoted\" \u000a more"#))
    }
}
