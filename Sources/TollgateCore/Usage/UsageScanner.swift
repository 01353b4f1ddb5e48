/// Token usage as an instance reported it.
public struct TokenUsage: Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int
    public init(promptTokens: Int, completionTokens: Int) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
    }
    public var totalTokens: Int { promptTokens + completionTokens }
}

/// Finds the `usage` object in an instance's answer without parsing the whole document.
///
/// OpenAI-compatible servers put `"usage":{"prompt_tokens":P,"completion_tokens":C,...}` at
/// the end of a JSON answer, and in the last data event of a stream that asked for it. The
/// scan looks for the last `"usage"` member name that is not inside a string (a prompt that
/// quotes the word has its quotes escaped) and reads the two counters from its object.
public enum UsageScanner {
    /// The member names looked for, made once (not per call: every answer is scanned).
    static let usageKey = Array("\"usage\"".utf8)
    private static let promptKey = Array("\"prompt_tokens\"".utf8)
    private static let completionKey = Array("\"completion_tokens\"".utf8)

    public static func lastUsage(in bytes: UnsafeRawBufferPointer) -> TokenUsage? {
        let key = usageKey
        guard bytes.count >= key.count else { return nil }
        var i = bytes.count - key.count
        while i >= 0 {
            if bytes[i] == UInt8(ascii: "\""), matches(bytes, at: i, key), !escaped(bytes, before: i) {
                if let usage = readObject(bytes, from: i + key.count) { return usage }
            }
            i -= 1
        }
        return nil
    }

    public static func lastUsage(in bytes: [UInt8]) -> TokenUsage? {
        bytes.withUnsafeBytes { lastUsage(in: $0) }
    }

    private static func matches(_ b: UnsafeRawBufferPointer, at i: Int, _ key: [UInt8]) -> Bool {
        guard i + key.count <= b.count else { return false }
        for k in 0..<key.count where b[i + k] != key[k] { return false }
        return true
    }

    private static func escaped(_ b: UnsafeRawBufferPointer, before i: Int) -> Bool {
        var n = 0
        var j = i - 1
        while j >= 0, b[j] == UInt8(ascii: "\\") {
            n += 1
            j -= 1
        }
        return n % 2 == 1
    }

    /// After `"usage"`: whitespace, `:`, whitespace, `{ ... }` with the counters.
    private static func readObject(_ b: UnsafeRawBufferPointer, from start: Int) -> TokenUsage? {
        var i = start
        func space() { while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 } }
        space()
        guard i < b.count, b[i] == UInt8(ascii: ":") else { return nil }
        i += 1
        space()
        guard i < b.count, b[i] == UInt8(ascii: "{") else { return nil }
        guard let end = closingBrace(b, openingAt: i) else { return nil }
        let object = UnsafeRawBufferPointer(rebasing: b[i...end])
        guard let prompt = integer(after: promptKey, in: object) else { return nil }
        let completion = integer(after: completionKey, in: object) ?? 0
        return TokenUsage(promptTokens: prompt, completionTokens: completion)
    }

    /// The index of the `}` that closes the object opening at `open`, skipping strings and nested
    /// objects (counters are flat integers; `*_tokens_details` objects are skipped by depth); nil
    /// when it does not close within `b`.
    static func closingBrace(_ b: UnsafeRawBufferPointer, openingAt open: Int) -> Int? {
        var depth = 0
        var i = open
        var inString = false
        while i < b.count {
            let c = b[i]
            if inString {
                if c == UInt8(ascii: "\\") { i += 1 } else if c == UInt8(ascii: "\"") { inString = false }
            } else if c == UInt8(ascii: "\"") {
                inString = true
            } else if c == UInt8(ascii: "{") {
                depth += 1
            } else if c == UInt8(ascii: "}") {
                depth -= 1
                if depth == 0 { return i }
            }
            i += 1
        }
        return nil
    }

    private static func integer(after key: [UInt8], in b: UnsafeRawBufferPointer) -> Int? {
        guard b.count > key.count else { return nil }
        for i in 0...(b.count - key.count) where matches(b, at: i, key) {
            var j = i + key.count
            while j < b.count, b[j] == 0x20 { j += 1 }
            guard j < b.count, b[j] == UInt8(ascii: ":") else { continue }
            j += 1
            while j < b.count, b[j] == 0x20 { j += 1 }
            var value = 0
            var digits = 0
            while j < b.count, b[j] >= 48, b[j] <= 57, digits < 12 {
                value = value * 10 + Int(b[j] - 48)
                digits += 1
                j += 1
            }
            return digits > 0 ? value : nil
        }
        return nil
    }
}
