/// Rebuilds the non-stream answer of a streamed chat or text completion, so that a streamed
/// miss can be stored and later served to a non-stream request (and replayed to a stream).
///
/// Feed it the upstream's server-sent-event bytes as they arrive, split anywhere. Events end
/// with a blank line (`\n\n`, `\r\n\r\n` or `\r\r`: `SSELineReader`'s rule); `data:` lines are joined, comments and other
/// fields ignored. Each data event is a `chat.completion.chunk` or `text_completion` chunk,
/// until `data: [DONE]`. The assembled answer has:
/// - `id`, `created`, `model`, `system_fingerprint` and any other top-level member from the
///   chunks (last non-null wins), `object` `chat.completion` or `text_completion`;
/// - per choice, by `index`: `message.role`, `message.content` and other string delta fields
///   (`refusal`, `reasoning_content`) concatenated, `tool_calls` merged by index (`id`, `type`,
///   `function.name` from the first delta carrying them, `function.arguments` concatenated),
///   or `text` concatenated for completions; `logprobs` with their arrays concatenated;
///   `finish_reason` from the choice's last chunk carrying one;
/// - `usage` from the last chunk with a non-null one.
///
/// `assembled()` is nil — do not store — when the stream was cut off (no `[DONE]`, or a choice
/// without `finish_reason`), carried an error (`{"error":…}` data or an `error` event), had a
/// data event that is not a JSON object, or outgrew `limitBytes`.
public struct StreamAssembler: Sendable {
    /// The most text (content, arguments, …) collected before giving up.
    public let limitBytes: Int
    /// The stream can no longer be assembled (error, malformed event, over the limit); further
    /// input is ignored, and the caller may stop feeding.
    public private(set) var isAbandoned = false
    /// `data: [DONE]` was seen.
    public private(set) var sawDone = false

    private var lineBuffer: [UInt8] = []
    private var lineReader = SSELineReader()
    private var data: [UInt8] = []
    private var hasData = false
    private var eventType: [UInt8] = []
    private var textBytes = 0

    private var objectType: String?
    private var sawDelta = false
    private var top = OrderedFields()
    private var usage: CacheJSONValue?
    private var choices: [Int: ChoiceState] = [:]

    /// - Parameter limitBytes: gives up once this much text has been collected (the stored
    ///   answer would be over `CachePolicy.maxEntryBytes` anyway); unlimited by default.
    public init(limitBytes: Int = .max) {
        self.limitBytes = limitBytes
    }

    /// Takes the next bytes of the stream.
    public mutating func feed(_ bytes: [UInt8]) {
        guard !isAbandoned, !bytes.isEmpty else { return }
        var reader = lineReader
        let rest = bytes.withUnsafeBytes { raw in
            reader.scan(raw) { start, end, _ in
                if lineBuffer.isEmpty {
                    line(bytes[start..<end])
                } else {
                    var whole = lineBuffer
                    lineBuffer = []
                    whole.append(contentsOf: bytes[start..<end])
                    line(whole[...])
                }
                return !isAbandoned
            }
        }
        lineReader = reader
        if isAbandoned { return }
        lineBuffer.append(contentsOf: bytes[rest..<bytes.count])
        // A line that never ends: not an OpenAI-style stream.
        if limitBytes != .max, lineBuffer.count > limitBytes &+ 1 << 20 { isAbandoned = true }
    }

    /// The equivalent non-stream JSON answer, or nil when the stream must not be stored.
    public func assembled() -> [UInt8]? {
        guard !isAbandoned, sawDone || endsWithUnterminatedDone, !choices.isEmpty else { return nil }
        guard choices.values.allSatisfy({ $0.finishReason != nil }) else { return nil }
        let chat = objectType == "chat.completion.chunk" || (objectType != "text_completion" && sawDelta)
        var answer: [(key: String, value: CacheJSONValue)] = []
        for key in ["id", "object", "created", "model"] {
            if key == "object" {
                answer.append((key, .string(chat ? "chat.completion" : "text_completion")))
            } else if let v = top[key] {
                answer.append((key, v))
            }
        }
        for (key, value) in top.items where !["id", "created", "model"].contains(key) {
            answer.append((key, value))
        }
        let list = choices.keys.sorted().map { choices[$0]!.json(index: $0, chat: chat) }
        answer.append(("choices", .array(list)))
        if let usage { answer.append(("usage", usage)) }
        return CacheJSONValue.object(answer).encoded()
    }

    /// `data: [DONE]` as the last line, without the blank line after it.
    private var endsWithUnterminatedDone: Bool {
        var last = hasData ? data : []
        if !lineBuffer.isEmpty {
            guard !hasData, lineBuffer.starts(with: Array("data:".utf8)) else { return false }
            last = Array(lineBuffer.dropFirst(5))
        }
        return String(decoding: last, as: UTF8.self).trimmingSpaces == "[DONE]"
    }

    // MARK: Server-sent events

    private mutating func line(_ line: ArraySlice<UInt8>) {
        if line.isEmpty {
            dispatch()
            return
        }
        if line.first == UInt8(ascii: ":") { return }
        let colon = line.firstIndex(of: UInt8(ascii: ":")) ?? line.endIndex
        let field = line[line.startIndex..<colon]
        var value = colon < line.endIndex ? line[(colon + 1)...] : []
        if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        if field.elementsEqual("data".utf8) {
            if hasData { data.append(0x0A) }
            data.append(contentsOf: value)
            hasData = true
        } else if field.elementsEqual("event".utf8) {
            eventType = Array(value)
        }
    }

    private mutating func dispatch() {
        defer {
            data.removeAll(keepingCapacity: true)
            hasData = false
            eventType = []
        }
        if eventType.elementsEqual("error".utf8) {
            isAbandoned = true
            return
        }
        guard hasData, !sawDone else { return }
        if String(decoding: data, as: UTF8.self).trimmingSpaces == "[DONE]" {
            sawDone = true
            return
        }
        guard let chunk = try? CacheJSONValue.parse(data), let members = chunk.members else {
            isAbandoned = true
            return
        }
        if let error = chunk["error"], !error.isNull {
            isAbandoned = true
            return
        }
        merge(members)
    }

    // MARK: Chunks

    private mutating func merge(_ members: [(key: String, value: CacheJSONValue)]) {
        for (key, value) in members {
            switch key {
            case "choices":
                for (position, choice) in (value.array ?? []).enumerated() {
                    guard let fields = choice.members else { continue }
                    let index = choice["index"]?.int ?? position
                    // Taken out so the strings it holds are uniquely referenced and grow in place.
                    var state = choices.removeValue(forKey: index) ?? ChoiceState()
                    mergeChoice(fields, into: &state)
                    choices[index] = state
                }
            case "usage":
                if !value.isNull { usage = value }
            case "object":
                if let s = value.string { objectType = s }
            case "obfuscation":
                break  // OpenAI's per-chunk random padding, not part of the answer.
            default:
                if !value.isNull { top[key] = value }
            }
        }
        if textBytes > limitBytes { isAbandoned = true }
    }

    private mutating func mergeChoice(_ fields: [(key: String, value: CacheJSONValue)], into state: inout ChoiceState) {
        for (key, value) in fields {
            switch key {
            case "index":
                break
            case "delta":
                sawDelta = true
                for (name, v) in value.members ?? [] { mergeDelta(name, v, into: &state) }
            case "text":
                if let s = value.string {
                    state.text += s
                    textBytes += s.utf8.count
                }
            case "logprobs":
                state.logprobs = Self.mergeLogprobs(state.logprobs, value)
            case "finish_reason":
                if !value.isNull { state.finishReason = value }
            default:
                if !value.isNull { state.extras[key] = value }
            }
        }
    }

    private mutating func mergeDelta(_ name: String, _ value: CacheJSONValue, into state: inout ChoiceState) {
        switch name {
        case "role":
            if let s = value.string { state.role = s }
        case "tool_calls":
            for (position, call) in (value.array ?? []).enumerated() {
                let index = call["index"]?.int ?? position
                var tool = state.toolCalls.removeValue(forKey: index) ?? ToolCallState()
                if let id = call["id"]?.string, tool.id == nil { tool.id = id }
                if let type = call["type"]?.string, tool.type == nil { tool.type = type }
                if let function = call["function"] { mergeFunction(function, into: &tool.function) }
                state.toolCalls[index] = tool
            }
        case "function_call":
            var function = state.functionCall ?? FunctionState()
            state.functionCall = nil
            mergeFunction(value, into: &function)
            state.functionCall = function
        default:
            if let s = value.string {
                state.strings.append(s, to: name)
                textBytes += s.utf8.count
            } else if !value.isNull {
                state.otherMessageFields[name] = value
            }
        }
    }

    private mutating func mergeFunction(_ value: CacheJSONValue, into function: inout FunctionState) {
        if let name = value["name"]?.string, function.name.isEmpty { function.name = name }
        if let arguments = value["arguments"]?.string {
            function.arguments += arguments
            textBytes += arguments.utf8.count
        }
    }

    /// Arrays concatenated member by member (`content`, `refusal` for chat; `tokens`,
    /// `token_logprobs`, `top_logprobs`, `text_offset` for completions), other members replaced.
    private static func mergeLogprobs(_ old: CacheJSONValue?, _ new: CacheJSONValue) -> CacheJSONValue {
        guard let old, let oldMembers = old.members, let newMembers = new.members else {
            return new.isNull ? (old ?? .null) : new
        }
        var merged = OrderedFields(items: oldMembers)
        for (key, value) in newMembers {
            if case .array(let more) = value, case .array(let earlier)? = merged[key] {
                merged[key] = .array(earlier + more)
            } else if !value.isNull || merged[key] == nil {
                merged[key] = value
            }
        }
        return .object(merged.items)
    }
}

/// Object members in first-seen order, replaced by name.
private struct OrderedFields: Sendable {
    var items: [(key: String, value: CacheJSONValue)] = []

    subscript(key: String) -> CacheJSONValue? {
        get { items.first { $0.key == key }?.value }
        set {
            if let i = items.firstIndex(where: { $0.key == key }) {
                if let newValue { items[i].value = newValue } else { items.remove(at: i) }
            } else if let newValue {
                items.append((key, newValue))
            }
        }
    }
}

private struct FunctionState: Sendable {
    var name = ""
    var arguments = ""

    var json: CacheJSONValue { .object([("name", .string(name)), ("arguments", .string(arguments))]) }
}

private struct ToolCallState: Sendable {
    var id: String?
    var type: String?
    var function = FunctionState()
}

private struct ChoiceState: Sendable {
    var role: String?
    /// `content`, `refusal`, `reasoning_content`, …, concatenated, in first-seen order.
    var strings = OrderedStrings()
    var otherMessageFields = OrderedFields()
    var toolCalls: [Int: ToolCallState] = [:]
    var functionCall: FunctionState?
    var text = ""
    var logprobs: CacheJSONValue?
    var finishReason: CacheJSONValue?
    var extras = OrderedFields()

    func json(index: Int, chat: Bool) -> CacheJSONValue {
        var fields: [(key: String, value: CacheJSONValue)] = [("index", .number(String(index)))]
        if chat {
            var message: [(key: String, value: CacheJSONValue)] = [
                ("role", .string(role ?? "assistant")),
                ("content", strings.items.first { $0.key == "content" }.map { .string($0.value) } ?? .null),
            ]
            for (key, value) in strings.items where key != "content" { message.append((key, .string(value))) }
            if !toolCalls.isEmpty {
                let calls = toolCalls.keys.sorted().map { i -> CacheJSONValue in
                    let call = toolCalls[i]!
                    return .object([
                        ("id", call.id.map { .string($0) } ?? .null),
                        ("type", .string(call.type ?? "function")),
                        ("function", call.function.json),
                    ])
                }
                message.append(("tool_calls", .array(calls)))
            }
            if let functionCall { message.append(("function_call", functionCall.json)) }
            message.append(contentsOf: otherMessageFields.items)
            fields.append(("message", .object(message)))
        } else {
            fields.append(("text", .string(text)))
        }
        fields.append(("logprobs", logprobs ?? .null))
        fields.append(("finish_reason", finishReason ?? .null))
        fields.append(contentsOf: extras.items)
        return .object(fields)
    }
}

/// Strings concatenated by name, in first-seen order.
private struct OrderedStrings: Sendable {
    var items: [(key: String, value: String)] = []

    mutating func append(_ piece: String, to key: String) {
        if let i = items.firstIndex(where: { $0.key == key }) {
            items[i].value += piece
        } else {
            items.append((key, piece))
        }
    }
}

private extension String {
    /// Without leading and trailing spaces, tabs and line breaks.
    var trimmingSpaces: Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" || $0 == "\r\n" }
        guard let first = firstIndex(where: { !isSpace($0) }) else { return "" }
        let last = lastIndex(where: { !isSpace($0) })!
        return self[first...last]
    }
}
