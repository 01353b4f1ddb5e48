import TollgateCore
import XCTest

/// Numbers a client sends are parsed into bounded ranges where they enter, and duplicate
/// members resolve as the instances' JSON parsers resolve them: the last one wins.
final class RequestBoundsTests: XCTestCase {
    func scan(_ s: String) throws -> RequestSummary { try RequestScanner.scan(Array(s.utf8)) }

    func refusal(_ s: String, file: StaticString = #filePath, line: UInt = #line) -> RequestBodyError? {
        do {
            let r = try scan(s)
            XCTFail("accepted \(s): \(r)", file: file, line: line)
            return nil
        } catch {
            return error as? RequestBodyError
        }
    }

    func testMaxTokensOutOfRangeIsRefusedNamingTheParameter() {
        // The request that trapped the whole gateway: Int.max tokens.
        XCTAssertEqual(refusal(#"{"model":"m","messages":[],"max_tokens":9223372036854775807}"#)?.param, "max_tokens")
        XCTAssertEqual(refusal(#"{"model":"m","max_tokens":99999999999999999999999}"#)?.param, "max_tokens")
        XCTAssertEqual(refusal(#"{"model":"m","max_tokens":-1}"#)?.param, "max_tokens")
        XCTAssertEqual(refusal(#"{"model":"m","max_completion_tokens":2147483648}"#)?.param, "max_completion_tokens")
        XCTAssertEqual(refusal(#"{"model":"m","max_tokens":1e300}"#)?.param, "max_tokens")
        XCTAssertEqual(refusal(#"{"model":"m","max_tokens":1.5}"#)?.param, "max_tokens")
        XCTAssertEqual(refusal(#"{"model":"m","max_tokens":"24"}"#)?.param, "max_tokens")
        XCTAssertEqual(refusal(#"{"model":"m","n":0}"#)?.param, "n")
        XCTAssertEqual(refusal(#"{"model":"m","n":100000}"#)?.param, "n")
        let message = refusal(#"{"model":"m","max_tokens":-5}"#)?.message ?? ""
        XCTAssertTrue(message.contains("max_tokens"), message)
    }

    func testMaxTokensInRangeIsTaken() throws {
        XCTAssertEqual(try scan(#"{"max_tokens":2147483647}"#).maxTokens, 2_147_483_647)
        XCTAssertEqual(try scan(#"{"max_tokens":24.0}"#).maxTokens, 24)
        XCTAssertEqual(try scan(#"{"max_tokens":2.4e1}"#).maxTokens, 24)
        XCTAssertEqual(try scan(#"{"max_tokens":0}"#).maxTokens, 0)
        XCTAssertNil(try scan(#"{"max_tokens":null}"#).maxTokens)
        XCTAssertEqual(try scan(#"{"n":3}"#).choices, 3)
        XCTAssertNil(try scan(#"{"n":null}"#).choices)
    }

    func testDuplicateMembersLastOneWins() throws {
        // The quota bypass: a 1-token reservation for a 24-token generation.
        XCTAssertEqual(try scan(#"{"max_tokens":1,"max_tokens":24}"#).maxTokens, 24)
        XCTAssertEqual(try scan(#"{"max_completion_tokens":1,"max_completion_tokens":24}"#).maxTokens, 24)
        XCTAssertEqual(try scan(#"{"max_tokens":1,"max_tokens":null}"#).maxTokens, nil)
        // max_completion_tokens wins over max_tokens whatever the order (vLLM: `max_completion_tokens or max_tokens`).
        XCTAssertEqual(try scan(#"{"max_completion_tokens":9,"max_tokens":5}"#).maxTokens, 9)
        XCTAssertEqual(try scan(#"{"max_tokens":5,"max_completion_tokens":9}"#).maxTokens, 9)
        // The billing bypass: the instance sees include_usage false, so the gateway must ask for usage.
        XCTAssertFalse(try scan(#"{"stream_options":{"include_usage":true,"include_usage":false}}"#).includeUsage)
        XCTAssertTrue(try scan(#"{"stream_options":{"include_usage":false,"include_usage":true}}"#).includeUsage)
        XCTAssertFalse(try scan(#"{"stream_options":{"include_usage":true},"stream_options":{}}"#).includeUsage)
        XCTAssertFalse(try scan(#"{"stream_options":{"include_usage":true},"stream_options":null}"#).includeUsage)
        XCTAssertEqual(try scan(#"{"model":"a","model":"b"}"#).model, "b")
        XCTAssertEqual(try scan(#"{"stream":true,"stream":false}"#).stream, false)
        XCTAssertEqual(try scan(#"{"temperature":0,"temperature":0.7}"#).temperature, 0.7)
        XCTAssertEqual(try scan(#"{"temperature":0,"temperature":null}"#).temperature, nil)
        XCTAssertFalse(try scan(#"{"seed":1,"seed":null}"#).hasSeed)
        let body = #"{"messages":[{"role":"user","content":"a"}],"messages":[{"role":"user","content":"bb"}]}"#
        let range = try XCTUnwrap(try scan(body).promptRange)
        XCTAssertEqual(String(decoding: Array(body.utf8)[range], as: UTF8.self), #"[{"role":"user","content":"bb"}]"#)
    }

    func testReservationEstimateSaturates() {
        XCTAssertEqual(reservationEstimate(promptBytes: 400, maxTokens: 50, choices: 2, defaultMaxTokens: 1024), 200)
        XCTAssertEqual(reservationEstimate(promptBytes: Int.max, maxTokens: Int.max, choices: Int.max, defaultMaxTokens: 1024),
                       QuotaAmount.max)
        XCTAssertEqual(reservationEstimate(promptBytes: 0, maxTokens: -7, defaultMaxTokens: 1024), 1)
        XCTAssertLessThanOrEqual(reservationEstimate(promptBytes: 10, maxTokens: 2_147_483_647, choices: 128, defaultMaxTokens: 1024),
                                 QuotaAmount.max)
    }

    func testCachedAnswerWithAnExtremeCreationTimeIsRefused() throws {
        for created: Int64 in [Int64.min, -1, Int64.max, 253_402_300_800_000] {
            let entry = CachedAnswer(body: Array("{}".utf8), createdMs: created, model: "m").encoded()
            XCTAssertThrowsError(try CachedAnswer.decode(entry), "\(created)")
        }
        let fine = CachedAnswer(body: Array("{}".utf8), createdMs: 1_700_000_000_000, model: "m").encoded()
        XCTAssertEqual(try CachedAnswer.decode(fine).createdMs, 1_700_000_000_000)
        XCTAssertEqual(CachedAnswer.ageSeconds(createdMs: Int64.min, nowMs: Int64.max), 0)
        XCTAssertEqual(CachedAnswer.ageSeconds(createdMs: 1_000, nowMs: 61_000), 60)
    }

    /// Found by fuzzing against JSONSerialization: strings that are not Unicode are refused, as
    /// RFC 8259 and the instances' parsers refuse them; a surrogate pair is one character.
    func testStringsMustBeUnicode() throws {
        for bad in [[0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xFF, 0x22, 0x7D],  // {"a":"\xFF"}
                    [0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xC0, 0xAF, 0x22, 0x7D],  // overlong '/'
                    [0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xED, 0xA0, 0x80, 0x22, 0x7D],  // a UTF-8 surrogate
                    [0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xE2, 0x82, 0x22, 0x7D]] as [[UInt8]] {  // cut short
            XCTAssertThrowsError(try RequestScanner.scan(bad), "\(bad)")
        }
        XCTAssertThrowsError(try scan(#"{"a":"\ud800"}"#))
        XCTAssertThrowsError(try scan(#"{"a":"\udc00\ud800"}"#))
        XCTAssertThrowsError(try scan(#"{"a":"\ud800\u0041"}"#))
        XCTAssertEqual(try scan(#"{"model":"\ud83d\ude00 é ✓"}"#).model, "😀 é ✓")
        XCTAssertEqual(try scan("{\"model\":\"😀 é ✓\"}").model, "😀 é ✓")
    }
}
