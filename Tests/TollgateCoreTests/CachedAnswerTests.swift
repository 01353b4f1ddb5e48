import TollgateCore
import XCTest

final class CachedAnswerTests: XCTestCase {
    private let answer = CachedAnswer(
        status: 200, contentType: "application/json",
        body: Array(#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Grüße"},"finish_reason":"stop"}]}"#.utf8),
        createdMs: 1_760_000_000_123, model: "qwen2.5-0.5b-instruct")

    func testRoundTrip() throws {
        XCTAssertEqual(try CachedAnswer.decode(answer.encoded()), answer)
        let empty = CachedAnswer(body: [], createdMs: 1, model: "")
        XCTAssertEqual(try CachedAnswer.decode(empty.encoded()), empty)
        let big = CachedAnswer(body: Array(repeating: 0x61, count: 300_000), createdMs: 0, model: "m")
        XCTAssertEqual(try CachedAnswer.decode(big.encoded()), big)
        XCTAssertEqual(answer.encoded().count, answer.body.count + "application/json".utf8.count + "qwen2.5-0.5b-instruct".utf8.count + 31)
    }

    func testTruncatedInputThrows() {
        let bytes = answer.encoded()
        for length in 0..<bytes.count {
            XCTAssertThrowsError(try CachedAnswer.decode(Array(bytes[0..<length])), "length \(length)")
        }
        XCTAssertThrowsError(try CachedAnswer.decode(bytes + [0]))
    }

    func testCorruptInputThrows() {
        let bytes = answer.encoded()
        for i in 0..<bytes.count {
            var corrupt = bytes
            corrupt[i] ^= 0x20
            XCTAssertThrowsError(try CachedAnswer.decode(corrupt), "byte \(i)")
        }
        XCTAssertThrowsError(try CachedAnswer.decode(Array("not an entry at all, just some text".utf8)))
        XCTAssertThrowsError(try CachedAnswer.decode(Array(answer.body)))
        // A content type that would break a response head (it is written as a header).
        for type in ["application/json\r\nx-evil: 1", "text/plain\u{0}", "téxt/plain"] {
            let planted = CachedAnswer(contentType: type, body: Array("{}".utf8), createdMs: 0, model: "m")
            XCTAssertThrowsError(try CachedAnswer.decode(planted.encoded()), type)
        }
        // Random garbage never traps.
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let garbage = (0..<Int.random(in: 0..<80, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            XCTAssertThrowsError(try CachedAnswer.decode(Array("TGCA\u{1}".utf8) + garbage))
        }
    }
}
