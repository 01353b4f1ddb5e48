import Foundation
import TollgateCore
import XCTest

final class CacheStreamTests: XCTestCase {
    // MARK: Helpers

    private func chunk(_ choices: String, usage: String = "null") -> String {
        #"data: {"id":"chatcmpl-42","object":"chat.completion.chunk","created":1760000000,"model":"qwen","system_fingerprint":"fp_1","choices":["#
            + choices + #"],"usage":"# + usage + "}\n\n"
    }

    /// A stream as OpenAI sends it with `include_usage`: role, content in pieces (multi-byte
    /// characters, escapes), an empty delta with the finish reason, the usage chunk, [DONE].
    private var chatStream: String {
        ": keep-alive comment\n\n"
            + chunk(#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#)
            + chunk(#"{"index":0,"delta":{"content":"Héllo"},"logprobs":null,"finish_reason":null}"#)
            + chunk(#"{"index":0,"delta":{"content":" wörld \ud83d\ude00"},"logprobs":null,"finish_reason":null}"#)
            + "event: message\nid: 7\nretry: 10\n"
            + chunk(#"{"index":0,"delta":{"content":"\n\"quoted\" 😀"},"logprobs":null,"finish_reason":null}"#)
            + chunk(#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}"#)
            + chunk("", usage: #"{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}"#)
            + "data: [DONE]\n\n"
    }

    private func json(_ bytes: [UInt8]?, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let bytes = try XCTUnwrap(bytes, file: file, line: line)
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any], file: file, line: line)
    }

    private func assemble(_ parts: [[UInt8]]) -> [UInt8]? {
        var assembler = StreamAssembler()
        for part in parts { assembler.feed(part) }
        return assembler.assembled()
    }

    private func choices(_ answer: [String: Any]) -> [[String: Any]] { answer["choices"] as? [[String: Any]] ?? [] }

    // MARK: Assembler

    func testAssemblesChatStream() throws {
        let answer = try json(assemble([Array(chatStream.utf8)]))
        XCTAssertEqual(answer["id"] as? String, "chatcmpl-42")
        XCTAssertEqual(answer["object"] as? String, "chat.completion")
        XCTAssertEqual(answer["created"] as? Int, 1_760_000_000)
        XCTAssertEqual(answer["model"] as? String, "qwen")
        XCTAssertEqual(answer["system_fingerprint"] as? String, "fp_1")
        let choice = try XCTUnwrap(choices(answer).first)
        XCTAssertEqual(choices(answer).count, 1)
        XCTAssertEqual(choice["index"] as? Int, 0)
        XCTAssertEqual(choice["finish_reason"] as? String, "stop")
        let message = try XCTUnwrap(choice["message"] as? [String: Any])
        XCTAssertEqual(message["role"] as? String, "assistant")
        XCTAssertEqual(message["content"] as? String, "Héllo wörld 😀\n\"quoted\" 😀")
        let usage = try XCTUnwrap(answer["usage"] as? [String: Any])
        XCTAssertEqual(usage["prompt_tokens"] as? Int, 9)
        XCTAssertEqual(usage["completion_tokens"] as? Int, 12)
    }

    func testEverySplitPointGivesTheSameAnswer() throws {
        for separator in ["\n", "\r\n", "\r"] {
            let bytes = Array(chatStream.replacingOccurrences(of: "\n\n", with: separator + separator)
                .replacingOccurrences(of: "\nid: 7\n", with: separator + "id: 7" + separator).utf8)
            let whole = try XCTUnwrap(assemble([bytes]), "separator \(separator.debugDescription)")
            XCTAssertEqual(whole, assemble([Array(chatStream.utf8)]))
            for i in 0...bytes.count {
                XCTAssertEqual(assemble([Array(bytes[0..<i]), Array(bytes[i...])]), whole, "split at \(i)")
            }
            XCTAssertEqual(assemble(bytes.map { [$0] }), whole, "byte by byte")
            for i in stride(from: 0, to: bytes.count, by: 7) {
                let j = min(bytes.count, i + 13)
                XCTAssertEqual(assemble([Array(bytes[0..<i]), Array(bytes[i..<j]), Array(bytes[j...])]), whole)
            }
        }
    }

    func testCutOffStreamIsNotAssembled() {
        let bytes = Array(chatStream.utf8)
        let done = chatStream.utf8.count - "data: [DONE]\n\n".utf8.count
        for i in 0..<done {
            XCTAssertNil(assemble([Array(bytes[0..<i])]), "cut at \(i)")
        }
        // "data: [DONE]" as the last line is complete even without its blank line.
        XCTAssertNotNil(assemble([Array(bytes[0..<(bytes.count - 2)])]))
        // [DONE] without a finish_reason: still cut off.
        let unfinished = chunk(#"{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}"#) + "data: [DONE]\n\n"
        XCTAssertNil(assemble([Array(unfinished.utf8)]))
        // No choices at all.
        XCTAssertNil(assemble([Array("data: [DONE]\n\n".utf8)]))
    }

    func testErrorsAreNotAssembled() {
        let finished = chunk(#"{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}"#)
        XCTAssertNotNil(assemble([Array((finished + "data: [DONE]\n\n").utf8)]))
        let errorData = finished + #"data: {"error":{"message":"upstream died","type":"server_error"}}"# + "\n\ndata: [DONE]\n\n"
        XCTAssertNil(assemble([Array(errorData.utf8)]))
        let errorEvent = finished + "event: error\ndata: {\"message\":\"x\"}\n\ndata: [DONE]\n\n"
        XCTAssertNil(assemble([Array(errorEvent.utf8)]))
        let malformed = finished + "data: {\"id\":\n\ndata: [DONE]\n\n"
        XCTAssertNil(assemble([Array(malformed.utf8)]))
        var limited = StreamAssembler(limitBytes: 3)
        limited.feed(Array((finished + "data: [DONE]\n\n").utf8))
        XCTAssertNotNil(limited.assembled())
        var over = StreamAssembler(limitBytes: 1)
        over.feed(Array((finished + "data: [DONE]\n\n").utf8))
        XCTAssertTrue(over.isAbandoned)
        XCTAssertNil(over.assembled())
    }

    func testToolCallsAndSeveralChoices() throws {
        let stream = chunk(#"{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}"#)
            + chunk(#"{"index":1,"delta":{"role":"assistant","content":"Other"},"finish_reason":null}"#)
            + chunk(#"{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}"#)
            + chunk(#"{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":null}"#)
            + chunk(#"{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}"#)
            + chunk(#"{"index":1,"delta":{"content":" choice"},"finish_reason":"length"}"#)
            + chunk(#"{"index":0,"delta":{},"finish_reason":"tool_calls"}"#)
            + "data: [DONE]\n\n"
        let answer = try json(assemble([Array(stream.utf8)]))
        let list = choices(answer)
        XCTAssertEqual(list.map { $0["index"] as? Int }, [0, 1])
        XCTAssertEqual(list.map { $0["finish_reason"] as? String }, ["tool_calls", "length"])
        let first = try XCTUnwrap(list[0]["message"] as? [String: Any])
        XCTAssertTrue(first["content"] is NSNull)
        let calls = try XCTUnwrap(first["tool_calls"] as? [[String: Any]])
        XCTAssertEqual(calls.map { $0["id"] as? String }, ["call_a", "call_b"])
        XCTAssertEqual(calls.map { $0["type"] as? String }, ["function", "function"])
        let functions = calls.compactMap { $0["function"] as? [String: String] }
        XCTAssertEqual(functions, [["name": "get_weather", "arguments": #"{"city":"Paris"}"#], ["name": "get_time", "arguments": "{}"]])
        XCTAssertEqual((list[1]["message"] as? [String: Any])?["content"] as? String, "Other choice")
        XCTAssertNil(answer["usage"])
    }

    func testObfuscationPaddingIsDropped() throws {
        let stream = #"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","service_tier":"default","obfuscation":"x1y2","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}]}"#
            + "\n\ndata: [DONE]\n\n"
        let answer = try json(assemble([Array(stream.utf8)]))
        XCTAssertNil(answer["obfuscation"])
        XCTAssertEqual(answer["service_tier"] as? String, "default")
    }

    func testAssemblesTextCompletionStream() throws {
        func text(_ fields: String) -> String {
            #"data: {"id":"cmpl-7","object":"text_completion","created":5,"model":"qwen","choices":[{"index":0,"#
                + fields + "}]}\n\n"
        }
        let stream = text(#""text":"Once","logprobs":null,"finish_reason":null"#)
            + text(#""text":" upon","logprobs":null,"finish_reason":null"#)
            + text(#""text":"","logprobs":null,"finish_reason":"length""#)
            + "data: [DONE]\n\n"
        let answer = try json(assemble([Array(stream.utf8)]))
        XCTAssertEqual(answer["object"] as? String, "text_completion")
        XCTAssertEqual(answer["id"] as? String, "cmpl-7")
        let choice = try XCTUnwrap(choices(answer).first)
        XCTAssertEqual(choice["text"] as? String, "Once upon")
        XCTAssertEqual(choice["finish_reason"] as? String, "length")
        XCTAssertNil(choice["message"])
    }

    func testLogprobsArraysAreConcatenated() throws {
        let stream = chunk(#"{"index":0,"delta":{"content":"a"},"logprobs":{"content":[{"token":"a","logprob":-0.5,"top_logprobs":[]}],"refusal":null},"finish_reason":null}"#)
            + chunk(#"{"index":0,"delta":{"content":"b"},"logprobs":{"content":[{"token":"b","logprob":-1.0e-3,"top_logprobs":[]}],"refusal":null},"finish_reason":"stop"}"#)
            + "data: [DONE]\n\n"
        let bytes = try XCTUnwrap(assemble([Array(stream.utf8)]))
        XCTAssertTrue(String(decoding: bytes, as: UTF8.self).contains(#""logprob":-1.0e-3"#), "numbers keep their text")
        let logprobs = try XCTUnwrap(choices(try json(bytes)).first?["logprobs"] as? [String: Any])
        XCTAssertEqual((logprobs["content"] as? [[String: Any]])?.compactMap { $0["token"] as? String }, ["a", "b"])
    }

    // MARK: Replayer

    private let chatAnswer = #"{"id":"chatcmpl-9","object":"chat.completion","created":1760000001,"model":"qwen","system_fingerprint":"fp_2","choices":[{"index":0,"message":{"role":"assistant","content":"The family 👨‍👩‍👧‍👦 went to the café. 😀 Ünïcödé ànd \"quotes\"\nnew line — and a long tail of text to split in several pieces.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":30,"total_tokens":41}}"#

    private func chunks(_ events: [[UInt8]]) throws -> [[String: Any]] {
        var result: [[String: Any]] = []
        for (i, event) in events.enumerated() {
            let text = String(decoding: event, as: UTF8.self)
            XCTAssertTrue(text.hasPrefix("data: "), text)
            XCTAssertTrue(text.hasSuffix("\n\n"), text)
            XCTAssertFalse(text.dropLast(2).contains("\n"), "one line per event")
            if i == events.count - 1 {
                XCTAssertEqual(text, "data: [DONE]\n\n")
            } else {
                result.append(try json(Array(event.dropFirst(6))))
            }
        }
        return result
    }

    func testReplayedChatStreamAssemblesBack() throws {
        let events = try StreamReplayer.events(from: Array(chatAnswer.utf8), includeUsage: true)
        let parsed = try chunks(events)
        for chunk in parsed {
            XCTAssertEqual(chunk["id"] as? String, "chatcmpl-9")
            XCTAssertEqual(chunk["object"] as? String, "chat.completion.chunk")
            XCTAssertEqual(chunk["created"] as? Int, 1_760_000_001)
            XCTAssertEqual(chunk["model"] as? String, "qwen")
            XCTAssertEqual(chunk["system_fingerprint"] as? String, "fp_2")
            XCTAssertNotNil(chunk["usage"])
        }
        let first = try XCTUnwrap(choices(parsed[0]).first?["delta"] as? [String: String])
        XCTAssertEqual(first, ["role": "assistant", "content": ""])
        let pieces = parsed.compactMap { (choices($0).first?["delta"] as? [String: Any])?["content"] as? String }.dropFirst()
        XCTAssertGreaterThan(pieces.count, 5)
        for piece in pieces {
            XCTAssertLessThanOrEqual(piece.count, StreamReplayer.pieceCharacters)
        }
        XCTAssertTrue(pieces.contains { $0.contains("👨‍👩‍👧‍👦") }, "a grapheme is never split")
        let finish = try XCTUnwrap(choices(parsed[parsed.count - 2]).first)
        XCTAssertEqual(finish["finish_reason"] as? String, "stop")
        XCTAssertEqual((finish["delta"] as? [String: Any])?.count, 0)
        XCTAssertEqual(choices(parsed[parsed.count - 1]).count, 0)
        XCTAssertEqual((parsed[parsed.count - 1]["usage"] as? [String: Int])?["total_tokens"], 41)

        // Replayed, then assembled: the same answer.
        let original = try json(Array(chatAnswer.utf8))
        let back = try json(assemble(events))
        for key in ["id", "object", "model", "system_fingerprint"] {
            XCTAssertEqual(back[key] as? String, original[key] as? String, key)
        }
        XCTAssertEqual(back["created"] as? Int, 1_760_000_001)
        XCTAssertEqual(back["usage"] as? [String: Int], original["usage"] as? [String: Int])
        let message = try XCTUnwrap(choices(back).first?["message"] as? [String: Any])
        let originalMessage = try XCTUnwrap(choices(original).first?["message"] as? [String: Any])
        XCTAssertEqual(message["content"] as? String, originalMessage["content"] as? String)
        XCTAssertEqual(message["role"] as? String, "assistant")
        XCTAssertEqual(choices(back).first?["finish_reason"] as? String, "stop")

        // Every split of the replayed bytes assembles the same way.
        let flat = events.flatMap { $0 }
        let whole = assemble([flat])
        for i in stride(from: 0, through: flat.count, by: 5) {
            XCTAssertEqual(assemble([Array(flat[0..<i]), Array(flat[i...])]), whole)
        }
    }

    func testReplayWithoutUsage() throws {
        let events = try StreamReplayer.events(from: Array(chatAnswer.utf8), includeUsage: false)
        let parsed = try chunks(events)
        XCTAssertTrue(parsed.allSatisfy { $0["usage"] == nil })
        XCTAssertTrue(parsed.allSatisfy { !choices($0).isEmpty })
        XCTAssertNil(try json(assemble(events))["usage"])
    }

    func testReplayToolCalls() throws {
        let answer = #"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},{"id":"call_2","type":"function","function":{"name":"g","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#
        let events = try StreamReplayer.events(from: Array(answer.utf8), includeUsage: false)
        let back = try json(assemble(events))
        let choice = try XCTUnwrap(choices(back).first)
        XCTAssertEqual(choice["finish_reason"] as? String, "tool_calls")
        let message = try XCTUnwrap(choice["message"] as? [String: Any])
        XCTAssertTrue(message["content"] is NSNull)
        let calls = try XCTUnwrap(message["tool_calls"] as? [[String: Any]])
        XCTAssertEqual(calls.map { $0["id"] as? String }, ["call_1", "call_2"])
        XCTAssertEqual(calls.map { ($0["function"] as? [String: String])?["arguments"] }, [#"{"a":1}"#, "{}"])
    }

    func testReplayTextCompletion() throws {
        let answer = #"{"id":"cmpl-3","object":"text_completion","created":2,"model":"qwen","choices":[{"index":0,"text":"Once upon a time, in a land far away, there lived a gateway.","logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":16,"total_tokens":19}}"#
        let events = try StreamReplayer.events(from: Array(answer.utf8), includeUsage: true)
        let parsed = try chunks(events)
        XCTAssertTrue(parsed.allSatisfy { $0["object"] as? String == "text_completion" })
        XCTAssertNil(choices(parsed[0]).first?["delta"])
        let texts = parsed.compactMap { choices($0).first?["text"] as? String }
        XCTAssertEqual(texts.joined(), "Once upon a time, in a land far away, there lived a gateway.")
        XCTAssertEqual(texts.last, "")
        let back = try json(assemble(events))
        XCTAssertEqual(back["object"] as? String, "text_completion")
        XCTAssertEqual(choices(back).first?["text"] as? String, "Once upon a time, in a land far away, there lived a gateway.")
        XCTAssertEqual(choices(back).first?["finish_reason"] as? String, "length")
        XCTAssertEqual((back["usage"] as? [String: Int])?["completion_tokens"], 16)
    }

    func testReplayRefusesWhatCannotStream() {
        let embeddings = #"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}],"model":"m"}"#
        XCTAssertThrowsError(try StreamReplayer.events(from: Array(embeddings.utf8), includeUsage: false))
        XCTAssertThrowsError(try StreamReplayer.events(from: Array("{".utf8), includeUsage: false))
        XCTAssertThrowsError(try StreamReplayer.events(from: Array("[]".utf8), includeUsage: false))
    }

    func testEmptyContentReplaysAsRoleAndFinish() throws {
        let answer = #"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"length"}]}"#
        let events = try StreamReplayer.events(from: Array(answer.utf8), includeUsage: false)
        XCTAssertEqual(events.count, 3)
        let back = try json(assemble(events))
        XCTAssertEqual((choices(back).first?["message"] as? [String: Any])?["content"] as? String, "")
    }
}
