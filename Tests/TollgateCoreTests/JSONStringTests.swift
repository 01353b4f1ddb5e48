import Foundation
import TollgateCore
import XCTest

/// `JSONString`: the one escaper behind error bodies, `/healthz`, canonical cache keys and the
/// simulator's answers.
final class JSONStringTests: XCTestCase {
    private func literal(_ s: String, shortEscapes: Bool = true) -> String {
        var out: [UInt8] = []
        JSONString.append(s, to: &out, shortEscapes: shortEscapes)
        return String(decoding: out, as: UTF8.self)
    }

    func testShortEscapesForReadableBodies() {
        XCTAssertEqual(literal("a\"b\\c\nd\re\tf\u{1}\u{1F}"), #""a\"b\\c\nd\re\tf\u0001\u001f""#)
        var s = "x"
        appendJSONString("say \"hi\"\n", to: &s)
        XCTAssertEqual(s, #"x"say \"hi\"\n""#)
    }

    func testCanonicalFormWritesEveryControlCharacterAsUnicode() {
        XCTAssertEqual(literal("a\nb\r\t\u{0}", shortEscapes: false), #""a\u000ab\u000d\u0009\u0000""#)
    }

    func testNonASCIIPassesAsUTF8AndNothingToEscapeIsReturnedAsIs() {
        XCTAssertEqual(literal("café 😀 /"), "\"café 😀 /\"")
        XCTAssertEqual(JSONString.escaped("plain text é"), "plain text é")
        XCTAssertEqual(JSONString.escaped("tab\there"), #"tab\there"#)
    }

    func testEscapedTextParsesBackToTheSameString() throws {
        let original = "q\"\\\n\r\t\u{7}\u{1F}é😀"
        var body = ""
        appendJSONString(original, to: &body)
        let parsed = try JSONSerialization.jsonObject(with: Data(("[" + body + "]").utf8), options: []) as? [String]
        XCTAssertEqual(parsed, [original])
    }
}
