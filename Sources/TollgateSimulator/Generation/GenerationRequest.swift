import Foundation
import NIOCore

/// Which OpenAI endpoint a generation answers.
enum GenerationKind: Sendable {
    /// `POST /v1/chat/completions`: `chat.completion` objects, `delta` chunks.
    case chat
    /// `POST /v1/completions`: legacy `text_completion` objects, `text` chunks.
    case text
}

/// A rejected request body, answered with 400 and an `invalid_request_error`.
struct InvalidRequest: Error, Equatable {
    var message: String
    var param: String?
}

/// A parsed generation request: everything the simulator needs to produce its answer.
struct GenerationRequest: Equatable {
    /// The longest completion the simulated model produces (Qwen2.5-0.5B's context length).
    static let contextLength = 32_768

    var kind: GenerationKind
    /// Deterministic token count of the prompt; see `PromptTokens`.
    var promptTokens: Int
    /// Tokens to generate.
    var completionTokens: Int
    /// `"length"` when the request set a token limit (which the simulator always reaches), else `"stop"`.
    var finishReason: String
    var stream: Bool
    /// `stream_options.include_usage`.
    var includeUsage: Bool
    /// Seeds the completion text: a hash of the last user message (or the prompt) and of `seed`.
    var textSeed: UInt64

    /// Parses a `/v1/chat/completions` body.
    static func chat(body: ByteBuffer?, defaultCompletionTokens: Int) throws(InvalidRequest) -> GenerationRequest {
        let object = try JSONBody.object(body)
        guard let messages = object["messages"] as? [Any], !messages.isEmpty else {
            throw InvalidRequest(message: "'messages' is required and must be a non-empty array", param: "messages")
        }
        var promptTokens = 0
        var lastUserText: String?
        var lastText = ""
        for message in messages {
            guard let message = message as? [String: Any] else {
                throw InvalidRequest(message: "each message must be an object", param: "messages")
            }
            let text = try Self.contentText(message["content"])
            promptTokens += PromptTokens.words(in: text) + PromptTokens.perMessage
            lastText = text
            if (message["role"] as? String) == "user" { lastUserText = text }
        }
        return try Self.make(
            kind: .chat,
            object: object,
            promptTokens: promptTokens,
            seedText: lastUserText ?? lastText,
            defaultCompletionTokens: defaultCompletionTokens
        )
    }

    /// Parses a `/v1/completions` body; `prompt` is a string, an array of strings or an array of token ids.
    static func completion(body: ByteBuffer?, defaultCompletionTokens: Int) throws(InvalidRequest) -> GenerationRequest {
        let object = try JSONBody.object(body)
        let prompts = try JSONBody.texts(object["prompt"], field: "prompt")
        return try Self.make(
            kind: .text,
            object: object,
            promptTokens: prompts.tokens,
            seedText: prompts.texts.last ?? "",
            defaultCompletionTokens: defaultCompletionTokens
        )
    }

    private static func make(
        kind: GenerationKind,
        object: [String: Any],
        promptTokens: Int,
        seedText: String,
        defaultCompletionTokens: Int
    ) throws(InvalidRequest) -> GenerationRequest {
        var limit: Int?
        for field in ["max_completion_tokens", "max_tokens"] {
            guard let value = object[field], !(value is NSNull) else { continue }
            guard let tokens = JSONBody.int(value), tokens >= 1 else {
                throw InvalidRequest(message: "'\(field)' must be an integer of at least 1", param: field)
            }
            limit = tokens
            break
        }
        let completionTokens = limit ?? max(1, defaultCompletionTokens)
        if promptTokens + completionTokens > Self.contextLength {
            throw InvalidRequest(
                message: "This model's maximum context length is \(Self.contextLength) tokens. However, you requested "
                    + "\(promptTokens + completionTokens) tokens (\(promptTokens) in the prompt, \(completionTokens) "
                    + "in the completion). Please reduce the length of the prompt or completion.",
                param: nil
            )
        }
        let stream = JSONBody.bool(object["stream"]) ?? false
        let includeUsage = stream && (JSONBody.bool((object["stream_options"] as? [String: Any])?["include_usage"]) ?? false)
        var textSeed = TokenText.hash(seedText)
        if let seed = object["seed"].flatMap(JSONBody.int) {
            textSeed = TokenText.mix(textSeed ^ UInt64(bitPattern: Int64(seed)))
        }
        return GenerationRequest(
            kind: kind,
            promptTokens: promptTokens,
            completionTokens: completionTokens,
            finishReason: limit == nil ? "stop" : "length",
            stream: stream,
            includeUsage: includeUsage,
            textSeed: textSeed
        )
    }

    /// The text of a chat message's `content`: a string, an array of parts (only `text` parts count),
    /// or null (an assistant message carrying tool calls).
    private static func contentText(_ content: Any?) throws(InvalidRequest) -> String {
        switch content {
        case nil, is NSNull:
            return ""
        case let text as String:
            return text
        case let parts as [Any]:
            var texts: [String] = []
            for part in parts {
                guard let part = part as? [String: Any] else {
                    throw InvalidRequest(message: "content parts must be objects", param: "messages")
                }
                if let text = part["text"] as? String { texts.append(text) }
            }
            return texts.joined(separator: " ")
        default:
            throw InvalidRequest(message: "message content must be a string or an array of parts", param: "messages")
        }
    }
}

/// A parsed `/v1/embeddings` request.
struct EmbeddingRequest: Equatable {
    var inputs: [String]
    var promptTokens: Int

    /// Parses a `/v1/embeddings` body; `input` is a string, an array of strings or an array of token ids.
    static func parse(body: ByteBuffer?) throws(InvalidRequest) -> EmbeddingRequest {
        let object = try JSONBody.object(body)
        let inputs = try JSONBody.texts(object["input"], field: "input")
        return EmbeddingRequest(inputs: inputs.texts, promptTokens: inputs.tokens)
    }
}

/// How the simulator counts prompt tokens, deterministically and without a tokenizer:
///
/// - chat: for every message, the number of whitespace-separated words of its content (text parts
///   joined) plus 3 (`perMessage`, standing in for the role and the chat template's markers);
/// - completions and embeddings: the number of whitespace-separated words of each prompt/input string,
///   summed; an array of token ids counts one token per id.
///
/// Whitespace is ASCII space, tab, newline, vertical tab, form feed and carriage return.
/// Example: `[{"role":"user","content":"Hello there, world"}]` is 3 + 3 = 6 prompt tokens.
enum PromptTokens {
    /// Tokens added for every chat message.
    static let perMessage = 3

    /// Number of whitespace-separated words in `text`.
    static func words(in text: String) -> Int {
        var count = 0
        var inWord = false
        for byte in text.utf8 {
            let isSpace = byte == 0x20 || (byte >= 0x09 && byte <= 0x0D)
            if !isSpace, !inWord { count += 1 }
            inWord = !isSpace
        }
        return count
    }
}

/// Helpers over `JSONSerialization` results.
enum JSONBody {
    /// The body as a JSON object, or an `InvalidRequest`.
    static func object(_ body: ByteBuffer?) throws(InvalidRequest) -> [String: Any] {
        guard let body, body.readableBytes > 0 else {
            throw InvalidRequest(message: "We could not parse the JSON body of your request: the body is empty.", param: nil)
        }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(body.readableBytesView))
        } catch {
            throw InvalidRequest(message: "We could not parse the JSON body of your request.", param: nil)
        }
        guard let object = parsed as? [String: Any] else {
            throw InvalidRequest(message: "The JSON body of your request must be an object.", param: nil)
        }
        return object
    }

    /// An integer, also from a JSON number with an integral value (`16.0`); booleans are not integers.
    static func int(_ value: Any) -> Int? {
        guard let number = value as? NSNumber, !Self.isBoolean(number) else { return nil }
        let double = number.doubleValue
        guard double.rounded() == double, abs(double) < 1e15 else { return nil }
        return number.intValue
    }

    /// A JSON `true`/`false`; numbers and anything else are nil.
    static func bool(_ value: Any?) -> Bool? {
        guard let number = value as? NSNumber, Self.isBoolean(number) else { return nil }
        return number.boolValue
    }

    /// `JSONSerialization` gives booleans and numbers alike as `NSNumber`; booleans are the ones of
    /// Objective-C type `c` (char), which no JSON number uses (integers are `i`/`q`, others `d`).
    private static func isBoolean(_ number: NSNumber) -> Bool {
        String(cString: number.objCType) == "c"
    }

    /// Strings (or token-id arrays) of a `prompt`/`input` field, with their token count.
    static func texts(_ value: Any?, field: String) throws(InvalidRequest) -> (texts: [String], tokens: Int) {
        switch value {
        case let text as String:
            return ([text], PromptTokens.words(in: text))
        case let array as [Any] where !array.isEmpty:
            if let strings = array as? [String], strings.count == array.count {
                return (strings, strings.reduce(0) { $0 + PromptTokens.words(in: $1) })
            }
            let ids = array.compactMap(Self.int)
            if ids.count == array.count {
                return ([ids.map(String.init).joined(separator: " ")], ids.count)
            }
            throw InvalidRequest(message: "'\(field)' must be a string, an array of strings or an array of token ids", param: field)
        default:
            throw InvalidRequest(message: "'\(field)' is required and must be a string or a non-empty array", param: field)
        }
    }
}
