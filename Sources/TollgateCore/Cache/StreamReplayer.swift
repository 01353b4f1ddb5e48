/// Replays a stored non-stream answer to a streaming client, as the server-sent events an
/// OpenAI-compatible upstream would have sent.
public enum StreamReplayer {
    /// Content is sent in pieces of this many characters (grapheme clusters, so a piece never
    /// ends inside a UTF-8 sequence or a combined emoji).
    public static let pieceCharacters = 16

    /// The events, each `data: {json}\n\n`, for a stored `chat.completion` or `text_completion`.
    ///
    /// Every chunk carries `id`, `object` (`chat.completion.chunk` or `text_completion`),
    /// `created`, `model` (and `system_fingerprint` when the answer has one). For each choice of
    /// a chat answer: a chunk with `delta: {role, content: ""}`; one chunk per other string
    /// message field (`refusal`, `reasoning_content`); the content in pieces; one chunk per tool
    /// call (`index`, `id`, `type`, `function` whole); then an empty delta with `finish_reason`
    /// (and the choice's `logprobs`). A text completion has text pieces, then an empty text with
    /// `finish_reason`. With `includeUsage`, every chunk has `"usage":null` and a last chunk has
    /// `"choices":[]` and the answer's usage, as OpenAI does for `stream_options.include_usage`.
    /// The last event is `data: [DONE]\n\n`.
    ///
    /// Throws `CacheFormatError` when `answer` is not JSON or not a chat or text completion
    /// (an embeddings answer cannot be streamed).
    public static func events(from answer: [UInt8], includeUsage: Bool) throws(CacheFormatError) -> [[UInt8]] {
        let value = try CacheJSONValue.parse(answer)
        guard value.members != nil, let choices = value["choices"]?.array else {
            throw CacheFormatError("cached answer has no choices")
        }
        let chat: Bool
        switch value["object"]?.string {
        case "chat.completion"?: chat = true
        case "text_completion"?: chat = false
        default:
            if choices.contains(where: { $0["message"] != nil }) {
                chat = true
            } else if choices.contains(where: { $0["text"] != nil }) {
                chat = false
            } else {
                throw CacheFormatError("cached answer is neither a chat nor a text completion")
            }
        }

        var head: [(key: String, value: CacheJSONValue)] = [
            ("id", value["id"] ?? .string(chat ? "chatcmpl-cached" : "cmpl-cached")),
            ("object", .string(chat ? "chat.completion.chunk" : "text_completion")),
            ("created", value["created"] ?? .number("0")),
            ("model", value["model"] ?? .string("")),
        ]
        if let fingerprint = value["system_fingerprint"], !fingerprint.isNull {
            head.append(("system_fingerprint", fingerprint))
        }
        func event(_ choices: [CacheJSONValue], usage: CacheJSONValue = .null) -> [UInt8] {
            var fields = head
            fields.append(("choices", .array(choices)))
            if includeUsage { fields.append(("usage", usage)) }
            var out = Array("data: ".utf8)
            CacheJSONValue.object(fields).write(into: &out, canonical: false)
            out.append(contentsOf: [0x0A, 0x0A])
            return out
        }

        var events: [[UInt8]] = []
        for (position, choice) in choices.enumerated() {
            let index = choice["index"] ?? .number(String(position))
            let finish = choice["finish_reason"].flatMap { $0.isNull ? nil : $0 } ?? .string("stop")
            let logprobs = choice["logprobs"] ?? .null
            func piece(_ fields: [(key: String, value: CacheJSONValue)]) -> CacheJSONValue {
                .object([("index", index)] + fields + [("logprobs", .null), ("finish_reason", .null)])
            }
            if chat {
                let message = choice["message"] ?? .object([])
                let content = message["content"]?.string
                events.append(event([piece([("delta", .object([
                    ("role", .string(message["role"]?.string ?? "assistant")),
                    ("content", content == nil ? .null : .string("")),
                ]))])]))
                for (key, field) in message.members ?? [] {
                    guard !["role", "content", "tool_calls", "function_call"].contains(key), let s = field.string else { continue }
                    events.append(event([piece([("delta", .object([(key, .string(s))]))])]))
                }
                for text in pieces(of: content ?? "") {
                    events.append(event([piece([("delta", .object([("content", .string(text))]))])]))
                }
                for (i, call) in (message["tool_calls"]?.array ?? []).enumerated() {
                    var fields: [(key: String, value: CacheJSONValue)] = [("index", .number(String(i)))]
                    for key in ["id", "type", "function"] {
                        if let v = call[key] { fields.append((key, v)) }
                    }
                    events.append(event([piece([("delta", .object([("tool_calls", .array([.object(fields)]))]))])]))
                }
                if let function = message["function_call"], !function.isNull {
                    events.append(event([piece([("delta", .object([("function_call", function)]))])]))
                }
                events.append(event([.object([
                    ("index", index), ("delta", .object([])), ("logprobs", logprobs), ("finish_reason", finish),
                ])]))
            } else {
                for text in pieces(of: choice["text"]?.string ?? "") {
                    events.append(event([piece([("text", .string(text))])]))
                }
                events.append(event([.object([
                    ("index", index), ("text", .string("")), ("logprobs", logprobs), ("finish_reason", finish),
                ])]))
            }
        }
        if includeUsage {
            events.append(event([], usage: value["usage"] ?? .null))
        }
        events.append(Array("data: [DONE]\n\n".utf8))
        return events
    }

    /// `text` in pieces of `pieceCharacters` characters; none for an empty text.
    static func pieces(of text: String) -> [String] {
        var result: [String] = []
        var current = ""
        var count = 0
        for character in text {
            current.append(character)
            count += 1
            if count == pieceCharacters {
                result.append(current)
                current = ""
                count = 0
            }
        }
        if !current.isEmpty { result.append(current) }
        return result
    }
}
