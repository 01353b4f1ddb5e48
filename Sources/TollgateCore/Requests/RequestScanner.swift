/// What the gateway needs from a request body, read in one pass without building a JSON tree.
public struct RequestSummary: Sendable, Equatable {
    /// The top-level `model` string, if present.
    public var model: String?
    /// The top-level `stream` flag (`false` when absent).
    public var stream: Bool
    /// `stream_options.include_usage` is `true`.
    public var includeUsage = false
    /// `max_completion_tokens` when given and not 0, else `max_tokens` (as vLLM resolves them),
    /// within `RequestBounds.maxTokens`.
    public var maxTokens: Int? { maxCompletionTokensMember.flatMap { $0 > 0 ? $0 : nil } ?? maxTokensMember }
    /// The last `max_tokens` member (duplicates: the last one wins, as in the instances' parsers).
    public var maxTokensMember: Int?
    /// The last `max_completion_tokens` member.
    public var maxCompletionTokensMember: Int?
    /// `n`, the number of choices to generate, within `RequestBounds.choices`.
    public var choices: Int?
    /// `temperature` when given as a number.
    public var temperature: Double?
    /// A non-null `seed` was given.
    public var hasSeed = false
    /// Byte range of the `messages` value (chat), or of `prompt`/`input` (completions, embeddings).
    public var promptRange: Range<Int>?

    public init(model: String?, stream: Bool) {
        self.model = model
        self.stream = stream
    }
}

/// Why a body was refused; the message is shown to the client.
public struct RequestBodyError: Error, Sendable, Equatable {
    public let message: String
    public let param: String?
}

/// The ranges numbers of a request body must fall in; anything else is refused at the edge
/// with a 400 naming the parameter, so no arithmetic after it can overflow.
public enum RequestBounds {
    /// `max_tokens`, `max_completion_tokens`: a 32-bit count, as the instances' servers take it.
    public static let maxTokens: ClosedRange<Int> = 0...2_147_483_647
    /// `n`: OpenAI's own upper bound.
    public static let choices: ClosedRange<Int> = 1...128
}

/// A strict single-pass JSON validator (RFC 8259) that also picks the top-level `model` and
/// `stream` members. The body is forwarded byte for byte, so nothing is re-encoded.
public enum RequestScanner {
    /// Maximum nesting depth accepted; deeper bodies are refused rather than risking the stack.
    public static let maxDepth = 128

    public static func scan(_ bytes: UnsafeRawBufferPointer) throws(RequestBodyError) -> RequestSummary {
        var parser = Parser(bytes: bytes)
        return try parser.document()
    }

    /// The text of the last user message in a `messages` array (string content, or the text
    /// parts of array content joined by spaces), or the string (first string of an array) of a
    /// `prompt`/`input` value. `value` is an already validated JSON value. For previews.
    public static func promptText(_ value: UnsafeRawBufferPointer) -> String? {
        var p = Parser(bytes: value)
        p.skipSpace()
        guard p.i < value.count else { return nil }
        if value[p.i] == UInt8(ascii: "\"") { return try? p.string(capture: true) }
        guard value[p.i] == UInt8(ascii: "[") else { return nil }
        p.i += 1
        var last: String?
        var lastUser: String?
        while true {
            p.skipSpace()
            guard p.i < value.count else { return lastUser ?? last }
            let c = value[p.i]
            if c == UInt8(ascii: "]") { return lastUser ?? last }
            if c == UInt8(ascii: ",") { p.i += 1; continue }
            if c == UInt8(ascii: "\"") {
                // prompt: ["first", "second"]: the first string.
                return try? p.string(capture: true)
            }
            guard c == UInt8(ascii: "{") else {
                guard (try? p.value()) != nil else { return nil }
                continue
            }
            // One message object: role and content.
            p.i += 1
            var role: String?
            var content: String?
            while true {
                p.skipSpace()
                guard p.i < value.count else { return nil }
                if value[p.i] == UInt8(ascii: "}") { p.i += 1; break }
                if value[p.i] == UInt8(ascii: ",") { p.i += 1; continue }
                guard let key = try? p.string(capture: true) else { return nil }
                p.skipSpace()
                p.i += 1  // ':'
                p.skipSpace()
                if key == "role", p.i < value.count, value[p.i] == UInt8(ascii: "\"") {
                    role = try? p.string(capture: true)
                } else if key == "content", p.i < value.count, value[p.i] == UInt8(ascii: "\"") {
                    content = try? p.string(capture: true)
                } else if key == "content", p.i < value.count, value[p.i] == UInt8(ascii: "[") {
                    let start = p.i
                    guard (try? p.value()) != nil else { return nil }
                    content = textParts(UnsafeRawBufferPointer(rebasing: value[start..<p.i]))
                } else {
                    guard (try? p.value()) != nil else { return nil }
                }
            }
            if let content {
                last = content
                if role == "user" { lastUser = content }
            }
        }
    }

    /// `[{"type":"text","text":"..."}, ...]` → the texts joined by spaces.
    static func textParts(_ value: UnsafeRawBufferPointer) -> String? {
        var texts: [String] = []
        var p = Parser(bytes: value)
        p.i = 1
        while p.i < value.count {
            p.skipSpace()
            guard p.i < value.count else { break }
            let c = value[p.i]
            if c == UInt8(ascii: "]") { break }
            if c == UInt8(ascii: ",") { p.i += 1; continue }
            guard c == UInt8(ascii: "{") else {
                guard (try? p.value()) != nil else { return nil }
                continue
            }
            p.i += 1
            while p.i < value.count {
                p.skipSpace()
                if value[p.i] == UInt8(ascii: "}") { p.i += 1; break }
                if value[p.i] == UInt8(ascii: ",") { p.i += 1; continue }
                guard let key = try? p.string(capture: true) else { return nil }
                p.skipSpace()
                p.i += 1
                p.skipSpace()
                if key == "text", p.i < value.count, value[p.i] == UInt8(ascii: "\""), let t = try? p.string(capture: true) {
                    texts.append(t)
                } else {
                    guard (try? p.value()) != nil else { return nil }
                }
            }
        }
        return texts.isEmpty ? nil : texts.joined(separator: " ")
    }

    public static func scan(_ bytes: [UInt8]) throws(RequestBodyError) -> RequestSummary {
        do {
            return try bytes.withUnsafeBytes { buffer in
                try scan(buffer)
            }
        } catch let error as RequestBodyError {
            throw error
        } catch {
            throw RequestBodyError(message: "unreadable body", param: nil)
        }
    }
}

private struct Parser {
    let bytes: UnsafeRawBufferPointer
    var i = 0
    var depth = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    func invalid(_ what: String) -> RequestBodyError {
        RequestBodyError(
            message: "We could not parse the JSON body of your request: \(what) at byte \(i). (The body must be a JSON object; see https://platform.openai.com/docs/api-reference)",
            param: nil)
    }

    mutating func skipSpace() {
        while i < bytes.count {
            switch bytes[i] {
            case 0x20, 0x09, 0x0A, 0x0D: i += 1
            default: return
            }
        }
    }

    mutating func document() throws(RequestBodyError) -> RequestSummary {
        skipSpace()
        guard i < bytes.count else { throw invalid("empty body") }
        guard bytes[i] == UInt8(ascii: "{") else {
            throw RequestBodyError(message: "The request body must be a JSON object.", param: nil)
        }
        var summary = RequestSummary(model: nil, stream: false)
        i += 1
        depth = 1
        skipSpace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw invalid("expected a member name") }
                let name = try string(capture: true)
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw invalid("expected ':'") }
                i += 1
                skipSpace()
                if name == "model" {
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else {
                        try value()
                        throw RequestBodyError(message: "'model' must be a string.", param: "model")
                    }
                    summary.model = try string(capture: true)
                } else if name == "stream_options" {
                    let start = i
                    try value()
                    summary.includeUsage = Self.flag("include_usage", in: UnsafeRawBufferPointer(rebasing: bytes[start..<i]))
                } else if name == "max_tokens" {
                    summary.maxTokensMember = try boundedInteger(name, RequestBounds.maxTokens)
                } else if name == "max_completion_tokens" {
                    summary.maxCompletionTokensMember = try boundedInteger(name, RequestBounds.maxTokens)
                } else if name == "n" {
                    summary.choices = try boundedInteger(name, RequestBounds.choices)
                } else if name == "temperature" {
                    let start = i
                    try value()
                    summary.temperature = Double(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self))
                } else if name == "seed" {
                    let start = i
                    try value()
                    summary.hasSeed = !UnsafeRawBufferPointer(rebasing: bytes[start..<i]).elementsEqual("null".utf8)
                } else if name == "messages" || name == "prompt" || name == "input" {
                    let start = i
                    try value()
                    summary.promptRange = start..<i
                } else if name == "stream" {
                    let start = i
                    try value()
                    let raw = bytes[start..<i]
                    if raw.elementsEqual("true".utf8) { summary.stream = true }
                    else if raw.elementsEqual("false".utf8) || raw.elementsEqual("null".utf8) { summary.stream = false }
                    else { throw RequestBodyError(message: "'stream' must be a boolean.", param: "stream") }
                } else {
                    try value()
                }
                skipSpace()
                guard i < bytes.count else { throw invalid("unexpected end") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "}") { i += 1; break }
                throw invalid("expected ',' or '}'")
            }
        }
        skipSpace()
        guard i == bytes.count else { throw invalid("unexpected data after the JSON object") }
        return summary
    }

    /// `"name": true` directly inside the object `bytes` (an already validated JSON value).
    static func flag(_ name: String, in bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.first == UInt8(ascii: "{") else { return false }
        var p = Parser(bytes: bytes)
        p.i = 1
        var found = false
        while true {
            p.skipSpace()
            guard p.i < bytes.count, bytes[p.i] == UInt8(ascii: "\"") else { return found }
            guard let key = try? p.string(capture: true) else { return found }
            p.skipSpace()
            p.i += 1  // ':'
            p.skipSpace()
            let start = p.i
            guard (try? p.value()) != nil else { return false }
            // Every member is read: of duplicates, the last one wins.
            if key == name { found = UnsafeRawBufferPointer(rebasing: bytes[start..<p.i]).elementsEqual("true".utf8) }
            p.skipSpace()
            guard p.i < bytes.count, bytes[p.i] == UInt8(ascii: ",") else { return found }
            p.i += 1
        }
    }

    /// A whole number in `range` (a JSON number with no fraction, in any notation), or nil for
    /// `null`; anything else is refused naming the member.
    mutating func boundedInteger(_ name: String, _ range: ClosedRange<Int>) throws(RequestBodyError) -> Int? {
        let start = i
        try value()
        let raw = UnsafeRawBufferPointer(rebasing: bytes[start..<i])
        if raw.elementsEqual("null".utf8) { return nil }
        let outOfRange = RequestBodyError(
            message: "Invalid '\(name)': expected an integer between \(range.lowerBound) and \(range.upperBound).", param: name)
        guard let first = raw.first, first == UInt8(ascii: "-") || (first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9")) else {
            throw outOfRange
        }
        let text = String(decoding: raw, as: UTF8.self)
        if let n = Int(text) {
            guard range.contains(n) else { throw outOfRange }
            return n
        }
        // 24.0 or 2.4e1: Python's parsers read a float, which pydantic takes when it is whole.
        guard let d = Double(text), d.isFinite, d.rounded() == d,
              d >= Double(range.lowerBound), d <= Double(range.upperBound) else { throw outOfRange }
        return Int(d)
    }

    mutating func value() throws(RequestBodyError) {
        guard i < bytes.count else { throw invalid("unexpected end") }
        switch bytes[i] {
        case UInt8(ascii: "{"):
            depth += 1
            guard depth <= RequestScanner.maxDepth else { throw invalid("nesting too deep") }
            i += 1
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; depth -= 1; return }
            while true {
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw invalid("expected a member name") }
                _ = try string(capture: false)
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw invalid("expected ':'") }
                i += 1
                skipSpace()
                try value()
                skipSpace()
                guard i < bytes.count else { throw invalid("unexpected end") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "}") { i += 1; depth -= 1; return }
                throw invalid("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            depth += 1
            guard depth <= RequestScanner.maxDepth else { throw invalid("nesting too deep") }
            i += 1
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; depth -= 1; return }
            while true {
                skipSpace()
                try value()
                skipSpace()
                guard i < bytes.count else { throw invalid("unexpected end") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "]") { i += 1; depth -= 1; return }
                throw invalid("expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            _ = try string(capture: false)
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try number()
        default:
            throw invalid("unexpected character")
        }
    }

    mutating func literal(_ word: StaticString) throws(RequestBodyError) {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { throw invalid("unexpected end") }
        for k in 0..<n where bytes[i + k] != word.utf8Start[k] { throw invalid("invalid literal") }
        i += n
    }

    mutating func digits() -> Int {
        let start = i
        while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") { i += 1 }
        return i - start
    }

    mutating func number() throws(RequestBodyError) {
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        guard i < bytes.count else { throw invalid("unexpected end") }
        if bytes[i] == UInt8(ascii: "0") {
            i += 1
        } else {
            guard digits() > 0 else { throw invalid("invalid number") }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            guard digits() > 0 else { throw invalid("invalid number") }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { throw invalid("invalid number") }
        }
    }

    /// Reads a string starting at the opening quote; returns its decoded value when `capture`.
    mutating func string(capture: Bool) throws(RequestBodyError) -> String {
        i += 1
        let start = i
        var decoded: [UInt8] = []
        var escaped = false
        while true {
            guard i < bytes.count else { throw invalid("unterminated string") }
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                break
            } else if c == UInt8(ascii: "\\") {
                if capture && !escaped { decoded.append(contentsOf: bytes[start..<i]) }
                escaped = true
                i += 1
                guard i < bytes.count else { throw invalid("unterminated string") }
                switch bytes[i] {
                case UInt8(ascii: "\""): decoded.append(0x22)
                case UInt8(ascii: "\\"): decoded.append(0x5C)
                case UInt8(ascii: "/"): decoded.append(0x2F)
                case UInt8(ascii: "b"): decoded.append(0x08)
                case UInt8(ascii: "f"): decoded.append(0x0C)
                case UInt8(ascii: "n"): decoded.append(0x0A)
                case UInt8(ascii: "r"): decoded.append(0x0D)
                case UInt8(ascii: "t"): decoded.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4(at: i + 1)
                    i += 4
                    // A high surrogate must be followed by an escaped low one: the pair is one
                    // scalar. A surrogate alone is not Unicode (RFC 8259 8.2; the instances'
                    // parsers refuse it too).
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard i + 6 < bytes.count, bytes[i + 1] == UInt8(ascii: "\\"), bytes[i + 2] == UInt8(ascii: "u") else {
                            throw invalid("unpaired surrogate in \\u escape")
                        }
                        let low = try hex4(at: i + 3)
                        guard (0xDC00...0xDFFF).contains(low) else { throw invalid("unpaired surrogate in \\u escape") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw invalid("unpaired surrogate in \\u escape")
                    }
                    if capture, let s = Unicode.Scalar(scalar) {
                        decoded.append(contentsOf: Array(String(Character(s)).utf8))
                    }
                default:
                    throw invalid("invalid escape")
                }
                i += 1
            } else if c < 0x20 {
                throw invalid("control character in string")
            } else if c < 0x80 {
                if escaped && capture { decoded.append(c) }
                i += 1
            } else {
                // Outside ASCII: one whole, valid UTF-8 sequence (RFC 3629), else refused.
                let n = try utf8Sequence(at: i)
                if escaped && capture { decoded.append(contentsOf: bytes[i..<(i + n)]) }
                i += n
            }
        }
        defer { i += 1 }
        guard capture else { return "" }
        if escaped { return String(decoding: decoded, as: UTF8.self) }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
    }

    /// Four hex digits at `at`, as a number.
    func hex4(at start: Int) throws(RequestBodyError) -> UInt32 {
        guard start + 3 < bytes.count else { throw invalid("invalid \\u escape") }
        var value: UInt32 = 0
        for k in 0..<4 {
            guard let h = hexValue(bytes[start + k]) else { throw invalid("invalid \\u escape") }
            value = value << 4 | UInt32(h)
        }
        return value
    }

    /// The length of the well-formed UTF-8 sequence starting at `at` (its lead byte is >= 0x80):
    /// no overlong forms, no surrogates, nothing past U+10FFFF.
    func utf8Sequence(at start: Int) throws(RequestBodyError) -> Int {
        let b0 = bytes[start]
        let length: Int
        var low: UInt8 = 0x80, high: UInt8 = 0xBF
        switch b0 {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; low = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; high = 0x9F
        case 0xF0: length = 4; low = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; high = 0x8F
        default: throw invalid("invalid UTF-8")
        }
        guard start + length <= bytes.count else { throw invalid("invalid UTF-8") }
        let b1 = bytes[start + 1]
        guard b1 >= low && b1 <= high else { throw invalid("invalid UTF-8") }
        for k in 2..<length where bytes[start + k] & 0xC0 != 0x80 { throw invalid("invalid UTF-8") }
        return length
    }

    func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - 48
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - 87
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - 55
        default: return nil
        }
    }
}
