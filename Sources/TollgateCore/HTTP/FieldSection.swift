/// The field lines of an HTTP/1.1 head and the empty line that ends it (RFC 9112 §5, §2.2),
/// read the same way in requests (`RequestHeadParser`) and answers (`ResponseHeadParser`):
/// lines end with CRLF, never a bare CR or LF; no line starts with whitespace (obs-fold, or
/// whitespace between the start line and the first field); a name is a token directly followed
/// by its colon; a value holds no control but HTAB, and the whitespace around it is not part
/// of it (RFC 9110 §5.5).
///
/// Incremental and zero-copy like the parsers that run it: it keeps where it is inside a line
/// between calls and reports ranges into the head's bytes. What a field means (framing,
/// `Connection`, limits on the count) is each parser's.
struct FieldSectionScanner: Sendable {
    enum Event: Equatable {
        /// A complete field line. `line` is the value with the whitespace after it (some
        /// fields refuse a tab anywhere on their line).
        case field(name: Range<Int>, value: Range<Int>, line: Range<Int>)
        /// The empty line: the head ends at `length` (the byte after its LF).
        case end(length: Int)
    }

    private enum Stage: UInt8, Sendable {
        case fieldStart, name, valueStart, value, fieldLF, finalLF
    }

    private var stage = Stage.fieldStart
    private var nameStart = 0
    private var nameEnd = 0
    private var valueStart = 0
    /// The end of the value read so far without trailing whitespace.
    private var valueEnd = 0
    /// Where the field line's CR is.
    private var lineEnd = 0

    init() {}

    /// Reads on from `i` (the byte after the start line's LF, or where the last call stopped)
    /// up to `end`. Returns the next complete field line, the end of the head, or nil when the
    /// bytes ran out before either (`i` is then `end`). A refusal is thrown as the calling
    /// parser's own error.
    @inline(__always)
    mutating func next<Refusal: FieldLineRefusal>(_ bytes: UnsafeRawBufferPointer, at i: inout Int, end: Int,
                                                  refusing _: Refusal.Type) throws(Refusal) -> Event? {
        // Locals in the loops: stores to `self` could alias `bytes`, and would be made byte by byte.
        var k = i
        defer { i = k }
        while k < end {
            switch stage {
            case .fieldStart:
                let b = bytes[k]
                if b == HTTPBytes.cr {
                    k += 1
                    stage = .finalLF
                    continue
                }
                // A line that starts with whitespace is obs-fold, or whitespace between the
                // start line and the first field: both refused (RFC 9112 §5.2, §2.2).
                if HTTPBytes.isWhitespace(b) { throw Refusal.obsoleteLineFolding.at(k) }
                if b == HTTPBytes.lf { throw Refusal.bareLineFeed.at(k) }
                guard HTTPBytes.isToken(b) else { throw Refusal.invalidFieldName.at(k) }
                nameStart = k
                stage = .name

            case .name:
                while k < end && HTTPBytes.isToken(bytes[k]) { k += 1 }
                if k == end { return nil }
                let b = bytes[k]
                guard b == UInt8(ascii: ":") else {
                    // RFC 9112 §5.1: no whitespace between name and colon, MUST be rejected.
                    if HTTPBytes.isWhitespace(b) { throw Refusal.whitespaceBeforeColon.at(k) }
                    if b == HTTPBytes.cr || b == HTTPBytes.lf { throw Refusal.fieldWithoutColon.at(k) }
                    throw Refusal.invalidFieldName.at(k)
                }
                nameEnd = k
                k += 1
                stage = .valueStart

            case .valueStart:
                while k < end && HTTPBytes.isWhitespace(bytes[k]) { k += 1 }
                if k == end { return nil }
                valueStart = k
                valueEnd = k
                stage = .value

            case .value:
                // field-value = *field-content: visible bytes, obs-text, and SP/HTAB inside;
                // the whitespace after the last visible byte is not part of it (RFC 9110 §5.5).
                var last = valueEnd
                while k < end {
                    let b = bytes[k]
                    if HTTPBytes.isFieldVisible(b) {
                        k += 1
                        last = k
                    } else if HTTPBytes.isWhitespace(b) {
                        k += 1
                    } else {
                        break
                    }
                }
                valueEnd = last
                if k == end { return nil }
                let b = bytes[k]
                guard b == HTTPBytes.cr else {
                    if b == HTTPBytes.lf { throw Refusal.bareLineFeed.at(k) }
                    throw Refusal.invalidFieldValue.at(k)
                }
                lineEnd = k
                k += 1
                stage = .fieldLF

            case .fieldLF:
                guard bytes[k] == HTTPBytes.lf else { throw Refusal.bareCarriageReturn.at(k) }
                k += 1
                stage = .fieldStart
                return .field(name: nameStart..<nameEnd, value: valueStart..<valueEnd, line: valueStart..<lineEnd)

            case .finalLF:
                guard bytes[k] == HTTPBytes.lf else { throw Refusal.bareCarriageReturn.at(k) }
                k += 1
                return .end(length: k)
            }
        }
        return nil
    }
}

/// The refusals a field line can get, which each parser's error type has under these names
/// (`RequestHeadError`, `ResponseHeadError`): the scanner throws the caller's own.
protocol FieldLineRefusal: Error {
    static var bareLineFeed: Self { get }
    static var bareCarriageReturn: Self { get }
    static var obsoleteLineFolding: Self { get }
    static var invalidFieldName: Self { get }
    static var whitespaceBeforeColon: Self { get }
    static var fieldWithoutColon: Self { get }
    static var invalidFieldValue: Self { get }
    /// The same refusal, found at `offset` from the head's first byte.
    func at(_ offset: Int) -> Self
}

extension RequestHeadError: FieldLineRefusal {}
extension ResponseHeadError: FieldLineRefusal {}

/// The values both parsers read the same way.
enum FieldValues {
    /// An HTAB inside or after the value of `Connection`, `Content-Length` or
    /// `Transfer-Encoding`. RFC 9110 allows it as whitespace; llhttp 9.3 (NIO's) reads such a value
    /// differently ("close\t" is not close, "chunked\t" is not chunked, "5\t" is invalid;
    /// llhttp 9.4 changed some of it): refused, so that no reader can take it another way.
    /// Before the value a tab is whitespace to everyone.
    static func containsTab(_ bytes: UnsafeRawBufferPointer, _ line: Range<Int>) -> Bool {
        for k in line where bytes[k] == HTTPBytes.htab { return true }
        return false
    }

    /// Content-Length = 1*DIGIT (RFC 9110 §8.6), at most Int.max. Nil: not such a number.
    static func contentLength(_ bytes: UnsafeRawBufferPointer, _ value: Range<Int>) -> Int? {
        guard !value.isEmpty else { return nil }
        var n = 0
        for k in value {
            let b = bytes[k]
            guard HTTPBytes.isDigit(b) else { return nil }
            let (times10, o1) = n.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(Int(b &- UInt8(ascii: "0")))
            guard !o1, !o2 else { return nil }
            n = sum
        }
        return n
    }

    /// Connection = #connection-option (RFC 9110 §7.6.1, list syntax §5.6.1: empty elements
    /// are allowed; each element is a token). Nil: not such a list.
    static func connectionOptions(_ bytes: UnsafeRawBufferPointer, _ value: Range<Int>) -> RequestHead.ConnectionOptions? {
        var options: RequestHead.ConnectionOptions = []
        var k = value.lowerBound
        while k < value.upperBound {
            while k < value.upperBound, HTTPBytes.isWhitespace(bytes[k]) || bytes[k] == UInt8(ascii: ",") { k += 1 }
            let start = k
            while k < value.upperBound, HTTPBytes.isToken(bytes[k]) { k += 1 }
            let token = start..<k
            while k < value.upperBound, HTTPBytes.isWhitespace(bytes[k]) { k += 1 }
            guard k == value.upperBound || bytes[k] == UInt8(ascii: ",") else { return nil }
            if token.isEmpty { continue }
            if HTTPBytes.tokenEquals(bytes, token, "close") {
                options.insert(.close)
            } else if HTTPBytes.tokenEquals(bytes, token, "keep-alive") {
                options.insert(.keepAlive)
            } else if HTTPBytes.tokenEquals(bytes, token, "upgrade") {
                options.insert(.upgrade)
            } else {
                options.insert(.other)
            }
        }
        return options
    }
}
