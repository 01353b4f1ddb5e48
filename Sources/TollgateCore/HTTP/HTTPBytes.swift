/// Character classes of HTTP/1.1's grammar (RFC 9110 §5.6, RFC 9112 §2–§7, RFC 3986 §2–§3),
/// as bit masks over the 128 ASCII bytes: a test is two shifts and an and, no table in memory
/// (a `static let` table would cost a lazy-initialisation check on every byte).
enum HTTPBytes {
    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")
    static let sp = UInt8(ascii: " ")
    static let htab = UInt8(ascii: "\t")

    @inline(__always)
    private static func member(_ b: UInt8, _ low: UInt64, _ high: UInt64) -> Bool {
        if b < 64 { return (low >> UInt64(b)) & 1 == 1 }
        if b < 128 { return (high >> UInt64(b &- 64)) & 1 == 1 }
        return false
    }

    /// tchar (RFC 9110 §5.6.2): methods, field names, transfer codings, connection options.
    @inline(__always)
    static func isToken(_ b: UInt8) -> Bool { member(b, 0x03ff_6cfa_0000_0000, 0x57ff_ffff_c7ff_fffe) }

    /// The characters of a request-target in origin-form or absolute-form: unreserved,
    /// sub-delims, ":", "@", "/", "?" and "%" of pct-encoded (RFC 3986 §3.3, §3.4). Not "#"
    /// (no fragment is sent), not "[" "]" outside an authority, no space, no controls, no
    /// bytes above 0x7E.
    @inline(__always)
    static func isTarget(_ b: UInt8) -> Bool { member(b, 0xafff_fff2_0000_0000, 0x47ff_fffe_87ff_ffff) }

    /// The characters of a `Host` value or an authority: reg-name or IP-literal, and ":" port
    /// (RFC 3986 §3.2.2): unreserved, sub-delims, "%", ":", "[", "]".
    @inline(__always)
    static func isAuthority(_ b: UInt8) -> Bool { member(b, 0x2fff_7ff2_0000_0000, 0x47ff_fffe_afff_fffe) }

    @inline(__always)
    static func isHexDigit(_ b: UInt8) -> Bool { member(b, 0x03ff_0000_0000_0000, 0x0000_007e_0000_007e) }

    @inline(__always)
    static func isDigit(_ b: UInt8) -> Bool { b &- UInt8(ascii: "0") < 10 }

    /// field-vchar (RFC 9110 §5.5): VCHAR or obs-text. Inside a value SP and HTAB are allowed
    /// too; every other control, DEL, a lone CR and a lone LF are not.
    @inline(__always)
    static func isFieldVisible(_ b: UInt8) -> Bool { b > 0x20 && b != 0x7F }

    @inline(__always)
    static func isWhitespace(_ b: UInt8) -> Bool { b == sp || b == htab }

    /// The value of a hexadecimal digit (only called on `isHexDigit` bytes).
    @inline(__always)
    static func hexValue(_ b: UInt8) -> Int {
        if b <= UInt8(ascii: "9") { return Int(b &- UInt8(ascii: "0")) }
        return Int((b | 0x20) &- UInt8(ascii: "a")) + 10
    }

    /// `bytes[range]` equals `lowercased` (letters, digits and "-" only), ASCII letters compared
    /// without case. Only for bytes above 0x20 — tokens and field values: among those the
    /// `| 0x20` fold maps nothing but an upper-case letter onto a letter, digit or "-".
    @inline(__always)
    static func tokenEquals(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ lowercased: StaticString) -> Bool {
        guard range.count == lowercased.utf8CodeUnitCount else { return false }
        let expected = lowercased.utf8Start
        var i = 0
        while i < range.count {
            if bytes[range.lowerBound &+ i] | 0x20 != expected[i] | 0x20 { return false }
            i &+= 1
        }
        return true
    }

    /// Like `tokenEquals`, for a prefix.
    @inline(__always)
    static func tokenHasPrefix(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ lowercased: StaticString) -> Bool {
        let n = lowercased.utf8CodeUnitCount
        guard range.count >= n else { return false }
        return tokenEquals(bytes, range.lowerBound..<(range.lowerBound + n), lowercased)
    }
}
