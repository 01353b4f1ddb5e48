import NIOCore
import TollgateCore

/// Builds the JSON and server-sent-event bytes of the simulator's answers by concatenation:
/// no `Codable`, no per-chunk encoder, so a zero-latency instance costs little more than its sockets.
enum ResponseRenderer {
    /// `text` escaped for use inside a JSON string literal (the gateway's `JSONString`).
    static func jsonEscaped(_ text: String) -> String {
        JSONString.escaped(text)
    }

    /// The OpenAI error body: `{"error":{"message":…,"type":…,"param":…,"code":null}}`.
    static func error(message: String, type: String, param: String? = nil) -> String {
        let param = param.map { "\"\(Self.jsonEscaped($0))\"" } ?? "null"
        return #"{"error":{"message":""# + Self.jsonEscaped(message) + #"","type":""# + type
            + #"","param":"# + param + #","code":null}}"#
    }

    /// `"usage":{…}` without the key.
    static func usage(prompt: Int, completion: Int) -> String {
        #"{"prompt_tokens":"# + String(prompt) + #","completion_tokens":"# + String(completion)
            + #","total_tokens":"# + String(prompt + completion) + "}"
    }

    /// A complete, non-streamed `chat.completion` or `text_completion` object.
    static func completion(
        kind: GenerationKind,
        id: String,
        created: Int,
        model: String,
        text: String,
        finishReason: String,
        promptTokens: Int,
        completionTokens: Int
    ) -> String {
        let choice: String
        switch kind {
        case .chat:
            choice = #"{"index":0,"message":{"role":"assistant","content":""# + text
                + #""},"logprobs":null,"finish_reason":""# + finishReason + #""}"#
        case .text:
            choice = #"{"index":0,"text":""# + text + #"","logprobs":null,"finish_reason":""# + finishReason + #""}"#
        }
        return #"{"id":""# + id + #"","object":""# + (kind == .chat ? "chat.completion" : "text_completion")
            + #"","created":"# + String(created) + #","model":""# + model + #"","choices":["# + choice
            + #"],"usage":"# + Self.usage(prompt: promptTokens, completion: completionTokens) + "}"
    }

    /// The `/v1/embeddings` answer.
    static func embeddings(model: String, inputs: [String], promptTokens: Int) -> String {
        var body = #"{"object":"list","data":["#
        for (index, input) in inputs.enumerated() {
            if index > 0 { body += "," }
            body += #"{"object":"embedding","index":"# + String(index) + #","embedding":["#
            body += TokenText.embedding(of: input).map { String($0) }.joined(separator: ",")
            body += "]}"
        }
        body += #"],"model":""# + model + #"","usage":{"prompt_tokens":"# + String(promptTokens)
            + #","total_tokens":"# + String(promptTokens) + "}}"
        return body
    }
}

/// The server-sent events of one streamed completion. Each event's fixed parts are computed once,
/// so a chunk is a handful of buffer writes.
struct StreamRenderer {
    private let kind: GenerationKind
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[`
    private let prefix: String
    /// `]}\n\n`, or `],"usage":null}\n\n` when the stream ends with a usage chunk.
    private let suffix: String

    init(kind: GenerationKind, id: String, created: Int, model: String, includeUsage: Bool) {
        self.kind = kind
        self.prefix = #"data: {"id":""# + id + #"","object":""#
            + (kind == .chat ? "chat.completion.chunk" : "text_completion")
            + #"","created":"# + String(created) + #","model":""# + model + #"","choices":["#
        self.suffix = includeUsage ? "],\"usage\":null}\n\n" : "]}\n\n"
    }

    /// Writes the chat stream's first event, the assistant role with empty content, and returns true;
    /// writes nothing and returns false for text completions, which have no role event.
    func roleEvent(into buffer: inout ByteBuffer) -> Bool {
        guard self.kind == .chat else { return false }
        buffer.writeString(self.prefix)
        buffer.writeString(#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#)
        buffer.writeString(self.suffix)
        return true
    }

    /// The event carrying one token.
    func tokenEvent(_ token: String, into buffer: inout ByteBuffer) {
        buffer.writeString(self.prefix)
        switch self.kind {
        case .chat: buffer.writeString(#"{"index":0,"delta":{"content":""#)
        case .text: buffer.writeString(#"{"index":0,"text":""#)
        }
        buffer.writeString(token)
        switch self.kind {
        case .chat: buffer.writeString(#""},"logprobs":null,"finish_reason":null}"#)
        case .text: buffer.writeString(#"","logprobs":null,"finish_reason":null}"#)
        }
        buffer.writeString(self.suffix)
    }

    /// The event with an empty delta and the finish reason.
    func finishEvent(_ finishReason: String, into buffer: inout ByteBuffer) {
        buffer.writeString(self.prefix)
        switch self.kind {
        case .chat: buffer.writeString(#"{"index":0,"delta":{},"logprobs":null,"finish_reason":""#)
        case .text: buffer.writeString(#"{"index":0,"text":"","logprobs":null,"finish_reason":""#)
        }
        buffer.writeString(finishReason)
        buffer.writeString(#""}"#)
        buffer.writeString(self.suffix)
    }

    /// The usage event (`"choices":[]`), sent when the request asked for `stream_options.include_usage`.
    func usageEvent(prompt: Int, completion: Int, into buffer: inout ByteBuffer) {
        buffer.writeString(self.prefix)
        buffer.writeString(#"],"usage":"#)
        buffer.writeString(ResponseRenderer.usage(prompt: prompt, completion: completion))
        buffer.writeString("}\n\n")
    }

    /// The stream's last event.
    static let done = "data: [DONE]\n\n"
}
