/// The gateway's one JSON string escaper, for every string it writes by hand: error bodies,
/// `/v1/models`, `/healthz`, the canonical form behind cache keys, and the simulator's answers.
///
/// `"` and `\` are escaped, control characters (U+0000…U+001F) as `\u00xx` in lower-case hex,
/// everything else, non-ASCII included, passes as raw UTF-8. With `shortEscapes` (the default)
/// newline, carriage return and tab are written `\n`, `\r`, `\t` instead; the canonical form
/// (`CanonicalJSON`) turns it off, since cache keys are digests of exactly those bytes.
public enum JSONString {
    /// Appends the escaped contents of `s` (without quotes) to `out`.
    public static func appendEscaped(_ s: String, to out: inout [UInt8], shortEscapes: Bool = true) {
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case UInt8(ascii: "\n") where shortEscapes: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case UInt8(ascii: "\r") where shortEscapes: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case UInt8(ascii: "\t") where shortEscapes: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0..<0x20:
                out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                        hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 0xF)]])
            default: out.append(byte)
            }
        }
    }

    /// Appends `s` as a JSON string literal, quotes included, to `out`.
    public static func append(_ s: String, to out: inout [UInt8], shortEscapes: Bool = true) {
        out.append(UInt8(ascii: "\""))
        appendEscaped(s, to: &out, shortEscapes: shortEscapes)
        out.append(UInt8(ascii: "\""))
    }

    /// The escaped contents of `s`, without quotes; `s` itself when nothing needs escaping.
    public static func escaped(_ s: String) -> String {
        guard s.utf8.contains(where: needsEscape) else { return s }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.utf8.count + 8)
        appendEscaped(s, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    @inline(__always)
    static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)
}

/// Appends `s` as a JSON string literal, quotes included (`JSONString`'s rules).
public func appendJSONString(_ s: String, to out: inout String) {
    out += "\""
    out += JSONString.escaped(s)
    out += "\""
}
