// UsageScanner.lastUsage on arbitrary bytes never traps, and finds the real counters of an
// answer (or of a stream's last event) whatever text the answer carries, before or after them.
import Foundation
@testable import TollgateCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUsageScanner(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = UsageScanner.lastUsage(in: bytes)

    var input = FuzzData(bytes)
    let prompt = input.int(below: 1_000_000_000), completion = input.int(below: 1_000_000_000)
    let text = String(decoding: input.rest(), as: UTF8.self)
    let usage: [String: Any] = ["prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                                "prompt_tokens_details": ["cached_tokens": 0]]
    let expected = TokenUsage(promptTokens: prompt, completionTokens: completion)
    // Sorted keys: `choices` before `usage`, `zz` after it.
    let answer: [String: Any] = [
        "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [["index": 0, "message": ["role": "assistant", "content": text], "finish_reason": "stop"]],
        "usage": usage, "zz": text,
    ]
    guard let json = try? JSONSerialization.data(withJSONObject: answer, options: [.sortedKeys]) else { return 0 }
    let found = UsageScanner.lastUsage(in: Array(json))
    fuzzCheck(found == expected, "usage \(String(describing: found)) != \(expected) in \(show(Array(json)))")

    let chunk: [String: Any] = ["choices": [["index": 0, "delta": ["content": text]]]]
    let last: [String: Any] = ["choices": [Any](), "usage": usage]
    guard let a = try? JSONSerialization.data(withJSONObject: chunk, options: [.sortedKeys]),
          let b = try? JSONSerialization.data(withJSONObject: last, options: [.sortedKeys]) else { return 0 }
    let stream = Array("data: ".utf8) + a + Array("\n\ndata: ".utf8) + b + Array("\n\ndata: [DONE]\n\n".utf8)
    let streamed = UsageScanner.lastUsage(in: stream)
    fuzzCheck(streamed == expected, "usage \(String(describing: streamed)) != \(expected) in the stream \(show(stream))")
    return 0
}
