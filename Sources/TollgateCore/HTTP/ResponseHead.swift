/// A parsed HTTP/1.1 response head that owns none of its bytes, like `RequestHead`: every part
/// is an offset range into the buffer the head arrived in, counted from the head's first byte.
/// The data plane forwards the instance's fields from those bytes as they came.
public struct ResponseHead: Sendable, Equatable {
    public typealias Version = RequestHead.Version
    public typealias Field = RequestHead.Field
    public typealias ConnectionOptions = RequestHead.ConnectionOptions

    /// How the answer's body is delimited (RFC 9112 §6.3).
    public enum Framing: Sendable, Equatable {
        /// No body: an answer to HEAD, a 1xx, 204 or 304 (rules 1 and 2), whatever the fields say.
        case none
        case contentLength(Int)
        case chunked
        /// Neither `Content-Length` nor `Transfer-Encoding`: the body ends when the connection
        /// closes (rule 8).
        case untilClose
    }

    /// Indices into `fields` of the fields the parser reads. `Content-Length` and
    /// `Transfer-Encoding` are refused when repeated; of `Connection` (and `Proxy-Connection`,
    /// read as it by llhttp) this is the first and `connectionCount` says how many there are.
    public struct KnownFields: Sendable, Equatable {
        public var contentLength: Int?
        public var transferEncoding: Int?
        public var connection: Int?
        public var connectionCount = 0
        public init() {}
    }

    /// Bytes of the head: the status line, the field lines and the empty line that ends it.
    /// The body (or whatever follows) starts here.
    public var length = 0
    public var version = Version.http11
    /// 100...599.
    public var status = 0
    /// The reason phrase as sent (may be empty).
    public var reason: Range<Int> = 0..<0
    public var fields: [Field] = []
    public var known = KnownFields()
    public var connectionOptions: ConnectionOptions = []
    /// The `Content-Length` value when there is one, also where it does not frame the body (an
    /// answer to HEAD carries the length the GET would have had, RFC 9110 §9.3.2).
    public var contentLength: Int?
    public var framing = Framing.none
    /// The connection may carry another request after this answer (RFC 9112 §9.3: HTTP/1.1
    /// unless `close`; HTTP/1.0 only with `keep-alive`; never after a body ended by a close,
    /// nor after a 101).
    public var keepAlive = true

    public init() {}

    /// A 1xx other than 101: an interim answer, followed by the final one (RFC 9110 §15.2).
    public var isInterim: Bool { status < 200 && status != 101 }

    /// The value of `fields[index]` in `bytes`, the buffer the head was parsed from.
    public func value(_ index: Int, in bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[fields[index].value])
    }

    /// `fields[index]`'s name equals `lowercased`, without regard to case.
    public func fieldName(_ index: Int, in bytes: UnsafeRawBufferPointer, is lowercased: StaticString) -> Bool {
        HTTPBytes.tokenEquals(bytes, fields[index].name, lowercased)
    }

    /// Whether the field name at `name` (a range in `bytes`) is one of the options of the
    /// `Connection` fields (RFC 9110 §7.6.1: such fields are hop-by-hop), compared without case.
    public func isListedInConnection(_ name: Range<Int>, in bytes: UnsafeRawBufferPointer) -> Bool {
        guard connectionOptions.contains(.other), let first = known.connection else { return false }
        var seen = 0
        var index = first
        while seen < known.connectionCount && index < fields.count {
            defer { index += 1 }
            guard ResponseHeadParser.isConnectionName(bytes, fields[index].name) else { continue }
            seen += 1
            let value = fields[index].value
            var k = value.lowerBound
            while k < value.upperBound {
                while k < value.upperBound, HTTPBytes.isWhitespace(bytes[k]) || bytes[k] == UInt8(ascii: ",") { k += 1 }
                let start = k
                while k < value.upperBound, HTTPBytes.isToken(bytes[k]) { k += 1 }
                if k > start, Self.equalIgnoringCase(bytes, start..<k, name) { return true }
                while k < value.upperBound, bytes[k] != UInt8(ascii: ",") { k += 1 }
            }
        }
        return false
    }

    @inline(__always)
    private static func lower(_ b: UInt8) -> UInt8 { b &- UInt8(ascii: "A") < 26 ? b | 0x20 : b }

    private static func equalIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ a: Range<Int>, _ b: Range<Int>) -> Bool {
        guard a.count == b.count else { return false }
        var i = 0
        while i < a.count {
            if lower(bytes[a.lowerBound + i]) != lower(bytes[b.lowerBound + i]) { return false }
            i += 1
        }
        return true
    }
}
