/// A malformed input to the response cache: a request body that is not JSON, a stored entry that
/// is truncated or corrupt, an answer that cannot be replayed as a stream.
public struct CacheFormatError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A parsed JSON value that keeps what the cache needs to be exact: numbers as their source text
/// (so that `1` and `1.0`, or a 64-bit integer, survive untouched unless canonicalized), object
/// members in source order, duplicates included.
enum CacheJSONValue: Sendable {
    case null
    case bool(Bool)
    /// The number's source text, validated against the JSON grammar.
    case number(String)
    case string(String)
    case array([CacheJSONValue])
    case object([(key: String, value: CacheJSONValue)])

    /// The last member named `key` (the one most JSON parsers keep), when this is an object.
    subscript(key: String) -> CacheJSONValue? {
        guard case .object(let members) = self else { return nil }
        for member in members.reversed() where member.key.utf8.elementsEqual(key.utf8) { return member.value }
        return nil
    }

    var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    var array: [CacheJSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    var members: [(key: String, value: CacheJSONValue)]? {
        if case .object(let m) = self { return m }
        return nil
    }

    var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// An integral number (`3`, `3.0`, `3e0`), as an `Int`.
    var int: Int? {
        guard case .number(let text) = self else { return nil }
        if let i = Int(text) { return i }
        guard let d = Double(text), d.rounded() == d, abs(d) < 9.0e15 else { return nil }
        return Int(d)
    }

    /// Parses a complete JSON document (RFC 8259: one value, surrounding whitespace only).
    static func parse(_ bytes: [UInt8]) throws(CacheFormatError) -> CacheJSONValue {
        var parser = CacheJSONParser(bytes: bytes)
        return try parser.document()
    }

    /// The compact encoding, members in their order, numbers as their source text.
    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        write(into: &out, canonical: false)
        return out
    }

    /// Writes the value without whitespace. `canonical` sorts members by the UTF-8 bytes of their
    /// names (keeping the last of duplicates) and normalizes numbers (see `CanonicalJSON`).
    func write(into out: inout [UInt8], canonical: Bool) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let text):
            if canonical {
                CacheJSONNumber.writeCanonical(text, into: &out)
            } else {
                out.append(contentsOf: text.utf8)
            }
        case .string(let s): CacheJSONValue.writeString(s, into: &out)
        case .array(let values):
            out.append(UInt8(ascii: "["))
            for (i, v) in values.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                v.write(into: &out, canonical: canonical)
            }
            out.append(UInt8(ascii: "]"))
        case .object(var members):
            if canonical { members = CacheJSONValue.canonicalOrder(members) }
            out.append(UInt8(ascii: "{"))
            for (i, m) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                CacheJSONValue.writeString(m.key, into: &out)
                out.append(UInt8(ascii: ":"))
                m.value.write(into: &out, canonical: canonical)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// Members sorted by the UTF-8 bytes of their names; of duplicate names, the last one only.
    static func canonicalOrder(_ members: [(key: String, value: CacheJSONValue)]) -> [(key: String, value: CacheJSONValue)] {
        let sorted = members.enumerated().sorted { a, b in
            if a.element.key.utf8.elementsEqual(b.element.key.utf8) { return a.offset < b.offset }
            return a.element.key.utf8.lexicographicallyPrecedes(b.element.key.utf8)
        }
        var result: [(key: String, value: CacheJSONValue)] = []
        result.reserveCapacity(sorted.count)
        for entry in sorted {
            if let last = result.last, last.key.utf8.elementsEqual(entry.element.key.utf8) {
                result[result.count - 1] = entry.element
            } else {
                result.append(entry.element)
            }
        }
        return result
    }

    /// One escaping for every string (`JSONString` without short escapes): `"` and `\` escaped,
    /// control characters as `\u00xx` (lower-case hex), everything else, non-ASCII included, as
    /// raw UTF-8.
    static func writeString(_ s: String, into out: inout [UInt8]) {
        JSONString.append(s, to: &out, shortEscapes: false)
    }
}

/// A strict recursive-descent JSON parser over UTF-8 bytes.
private struct CacheJSONParser {
    /// Deeper documents are refused rather than risking the stack.
    static let maxDepth = 256

    let bytes: [UInt8]
    var i = 0
    var depth = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func document() throws(CacheFormatError) -> CacheJSONValue {
        skipSpace()
        let value = try value()
        skipSpace()
        guard i == bytes.count else { throw fail("unexpected content after the JSON value") }
        return value
    }

    private func fail(_ what: String) -> CacheFormatError {
        CacheFormatError("invalid JSON at byte \(i): \(what)")
    }

    private mutating func skipSpace() {
        while i < bytes.count {
            switch bytes[i] {
            case 0x20, 0x09, 0x0A, 0x0D: i += 1
            default: return
            }
        }
    }

    private mutating func value() throws(CacheFormatError) -> CacheJSONValue {
        guard i < bytes.count else { throw fail("unexpected end of input") }
        switch bytes[i] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw fail("unexpected character")
        }
    }

    private mutating func literal(_ word: StaticString) throws(CacheFormatError) {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { throw fail("unexpected end of input") }
        let expected = UnsafeBufferPointer(start: word.utf8Start, count: n)
        for k in 0..<n where bytes[i + k] != expected[k] { throw fail("invalid literal") }
        i += n
    }

    private mutating func enter() throws(CacheFormatError) {
        depth += 1
        guard depth <= CacheJSONParser.maxDepth else { throw fail("nested deeper than \(CacheJSONParser.maxDepth)") }
    }

    private mutating func object() throws(CacheFormatError) -> CacheJSONValue {
        try enter()
        i += 1
        var members: [(key: String, value: CacheJSONValue)] = []
        skipSpace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
            i += 1
            depth -= 1
            return .object(members)
        }
        while true {
            skipSpace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a member name") }
            let key = try string()
            skipSpace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            skipSpace()
            members.append((key: key, value: try value()))
            skipSpace()
            guard i < bytes.count else { throw fail("unexpected end of input") }
            if bytes[i] == UInt8(ascii: ",") {
                i += 1
            } else if bytes[i] == UInt8(ascii: "}") {
                i += 1
                depth -= 1
                return .object(members)
            } else {
                throw fail("expected ',' or '}'")
            }
        }
    }

    private mutating func array() throws(CacheFormatError) -> CacheJSONValue {
        try enter()
        i += 1
        var values: [CacheJSONValue] = []
        skipSpace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "]") {
            i += 1
            depth -= 1
            return .array(values)
        }
        while true {
            skipSpace()
            values.append(try value())
            skipSpace()
            guard i < bytes.count else { throw fail("unexpected end of input") }
            if bytes[i] == UInt8(ascii: ",") {
                i += 1
            } else if bytes[i] == UInt8(ascii: "]") {
                i += 1
                depth -= 1
                return .array(values)
            } else {
                throw fail("expected ',' or ']'")
            }
        }
    }

    /// A string starting at the opening quote; escapes decoded, UTF-8 validated.
    private mutating func string() throws(CacheFormatError) -> String {
        i += 1
        let start = i
        // Fast path: printable ASCII without escapes.
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return String(decoding: bytes[start..<(i - 1)], as: UTF8.self)
            }
            if c == UInt8(ascii: "\\") || c < 0x20 || c >= 0x80 { break }
            i += 1
        }
        var buffer = Array(bytes[start..<i])
        while true {
            guard i < bytes.count else { throw fail("unterminated string") }
            let c = bytes[i]
            switch c {
            case UInt8(ascii: "\""):
                i += 1
                let s = String(decoding: buffer, as: UTF8.self)
                guard s.utf8.count == buffer.count, s.utf8.elementsEqual(buffer) else {
                    throw fail("string is not valid UTF-8")
                }
                return s
            case UInt8(ascii: "\\"):
                i += 1
                guard i < bytes.count else { throw fail("unterminated string") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""): buffer.append(UInt8(ascii: "\""))
                case UInt8(ascii: "\\"): buffer.append(UInt8(ascii: "\\"))
                case UInt8(ascii: "/"): buffer.append(UInt8(ascii: "/"))
                case UInt8(ascii: "b"): buffer.append(0x08)
                case UInt8(ascii: "f"): buffer.append(0x0C)
                case UInt8(ascii: "n"): buffer.append(0x0A)
                case UInt8(ascii: "r"): buffer.append(0x0D)
                case UInt8(ascii: "t"): buffer.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                            throw fail("unpaired surrogate")
                        }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw fail("unpaired surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw fail("unpaired surrogate")
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw fail("invalid escape") }
                    buffer.append(contentsOf: UTF8.encode(u)!)
                default: throw fail("invalid escape")
                }
            case 0..<0x20:
                throw fail("control character in string")
            default:
                buffer.append(c)
                i += 1
            }
        }
    }

    private mutating func hex4() throws(CacheFormatError) -> UInt32 {
        guard i + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, returned as its text.
    private mutating func number() throws(CacheFormatError) -> String {
        let start = i
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        guard i < bytes.count, isDigit(bytes[i]) else { throw fail("invalid number") }
        if bytes[i] == UInt8(ascii: "0") {
            i += 1
        } else {
            while i < bytes.count, isDigit(bytes[i]) { i += 1 }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            guard i < bytes.count, isDigit(bytes[i]) else { throw fail("invalid number") }
            while i < bytes.count, isDigit(bytes[i]) { i += 1 }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard i < bytes.count, isDigit(bytes[i]) else { throw fail("invalid number") }
            var e = 0
            while i < bytes.count, isDigit(bytes[i]) {
                e = e * 10 + Int(bytes[i] - UInt8(ascii: "0"))
                guard e <= CacheJSONNumber.exponentLimit else { throw fail("exponent out of range") }
                i += 1
            }
        }
        return String(decoding: bytes[start..<i], as: UTF8.self)
    }

    private func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
}

/// Numbers by value: the canonical text of a validated JSON number.
enum CacheJSONNumber {
    /// The parser refuses a number whose written exponent exceeds this in magnitude
    /// (`1e9999999999`): no request has a meaningful number that large or small, and refusing it
    /// keeps the normalization exact and overflow-free.
    static let exponentLimit = 1_000_000_000

    /// Writes the shortest exact decimal form of `text`'s value: integers without a fraction or
    /// exponent up to 21 digits (`1`, `1.0`, `1e0`, `10E-1` → `1`), plain decimals down to
    /// 1e-7 (`0.50` → `0.5`), scientific notation outside (`1.5e-9`, `1e+21` → `1e21`);
    /// `-0` → `0`. The value is exact: no conversion through `Double`, so two different decimal
    /// values never share a form.
    static func writeCanonical(_ text: String, into out: inout [UInt8]) {
        let b = Array(text.utf8)
        var i = 0
        var negative = false
        if i < b.count, b[i] == UInt8(ascii: "-") {
            negative = true
            i += 1
        }
        var digits: [UInt8] = []
        var exponent = 0
        while i < b.count, b[i] >= UInt8(ascii: "0"), b[i] <= UInt8(ascii: "9") {
            if !(digits.isEmpty && b[i] == UInt8(ascii: "0")) { digits.append(b[i]) }
            i += 1
        }
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            while i < b.count, b[i] >= UInt8(ascii: "0"), b[i] <= UInt8(ascii: "9") {
                if !(digits.isEmpty && b[i] == UInt8(ascii: "0")) { digits.append(b[i]) }
                exponent -= 1
                i += 1
            }
        }
        if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            i += 1
            var expNegative = false
            if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
                expNegative = b[i] == UInt8(ascii: "-")
                i += 1
            }
            var e = 0
            while i < b.count {
                // The parser refused exponents over `exponentLimit`: no overflow here.
                e = e * 10 + Int(b[i] - UInt8(ascii: "0"))
                i += 1
            }
            exponent += expNegative ? -e : e
        }
        while let last = digits.last, last == UInt8(ascii: "0") {
            digits.removeLast()
            exponent += 1
        }
        guard !digits.isEmpty else {
            out.append(UInt8(ascii: "0"))
            return
        }
        if negative { out.append(UInt8(ascii: "-")) }
        let n = digits.count
        let adjusted = exponent + n - 1
        if exponent >= 0, adjusted < 21 {
            out.append(contentsOf: digits)
            out.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: exponent))
        } else if exponent < 0, adjusted >= -7 {
            if adjusted >= 0 {
                out.append(contentsOf: digits[0...adjusted])
                out.append(UInt8(ascii: "."))
                out.append(contentsOf: digits[(adjusted + 1)...])
            } else {
                out.append(contentsOf: [UInt8(ascii: "0"), UInt8(ascii: ".")])
                out.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: -adjusted - 1))
                out.append(contentsOf: digits)
            }
        } else {
            out.append(digits[0])
            if n > 1 {
                out.append(UInt8(ascii: "."))
                out.append(contentsOf: digits[1...])
            }
            out.append(UInt8(ascii: "e"))
            out.append(contentsOf: String(adjusted).utf8)
        }
    }
}
