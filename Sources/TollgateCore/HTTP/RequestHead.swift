/// A parsed HTTP/1.1 request head that owns none of its bytes: every part is an offset range
/// into the buffer the head arrived in, counted from the head's first byte (as hyper's
/// `record_header_indices` keeps `HeaderIndices`). The data plane reads the few values it needs
/// from that buffer and forwards the rest as it came.
public struct RequestHead: Sendable, Equatable {
    /// The methods the gateway parses (RFC 9110 §9 and PATCH, RFC 5789); any other token is
    /// refused (`unsupportedMethod`).
    public enum Method: UInt8, Sendable, Equatable, CaseIterable {
        case get, head, post, put, delete, options, patch, trace, connect

        public var name: String {
            switch self {
            case .get: "GET"
            case .head: "HEAD"
            case .post: "POST"
            case .put: "PUT"
            case .delete: "DELETE"
            case .options: "OPTIONS"
            case .patch: "PATCH"
            case .trace: "TRACE"
            case .connect: "CONNECT"
            }
        }
    }

    public enum Version: Sendable, Equatable {
        case http10, http11
    }

    /// How the request's body is delimited (RFC 9112 §6.3).
    public enum Framing: Sendable, Equatable {
        /// Neither `Content-Length` nor `Transfer-Encoding`: no body (rule 7).
        case none
        case contentLength(Int)
        case chunked
    }

    /// One field line: its name as sent (case kept) and its value without the whitespace
    /// around it (RFC 9110 §5.5).
    public struct Field: Sendable, Equatable {
        public var name: Range<Int>
        public var value: Range<Int>
        public init(name: Range<Int>, value: Range<Int>) {
            self.name = name
            self.value = value
        }
    }

    /// The options of the `Connection` fields (RFC 9110 §7.6.1), all occurrences together.
    public struct ConnectionOptions: OptionSet, Sendable, Equatable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let close = ConnectionOptions(rawValue: 1)
        public static let keepAlive = ConnectionOptions(rawValue: 2)
        public static let upgrade = ConnectionOptions(rawValue: 4)
        /// Another name: a field the sender wants dropped at this hop.
        public static let other = ConnectionOptions(rawValue: 8)
    }

    /// Indices into `fields` of the fields the gateway reads. Fields that may appear once are
    /// refused when repeated; of the list-valued ones (`Connection`, `Cache-Control`, `Upgrade`)
    /// this is the first and `count` says how many there are.
    public struct KnownFields: Sendable, Equatable {
        public var host: Int?
        public var authorization: Int?
        public var contentLength: Int?
        public var transferEncoding: Int?
        public var expect: Int?
        public var requestID: Int?
        public var connection: Int?
        public var connectionCount = 0
        public var cacheControl: Int?
        public var cacheControlCount = 0
        public var upgrade: Int?
        /// `x-tollgate-*` fields, in order (the gateway's own request options).
        public var tollgate: [Int] = []
        public init() {}
    }

    /// Bytes of the head: any empty lines before the request line, the request line, the field
    /// lines and the empty line that ends the head. The body (or the next request) starts here.
    public var length = 0
    public var method = Method.get
    public var methodRange: Range<Int> = 0..<0
    /// The request-target as sent.
    public var target: Range<Int> = 0..<0
    /// The path of the target: up to "?" in origin-form, after the authority in absolute-form
    /// (may be empty there: RFC 9112 §3.2.2 reads it as "/"); empty for CONNECT and "*".
    public var path: Range<Int> = 0..<0
    /// After "?", without it; nil without "?".
    public var query: Range<Int>?
    public var version = Version.http11
    public var fields: [Field] = []
    public var known = KnownFields()
    public var connectionOptions: ConnectionOptions = []
    public var framing = Framing.none
    /// The connection may carry another request after this one (RFC 9112 §9.3: HTTP/1.1 unless
    /// `close`; HTTP/1.0 only with `keep-alive`). Upgrades and CONNECT aside: see `switchesProtocol`.
    public var keepAlive = true
    /// `Expect: 100-continue` in an HTTP/1.1 request (RFC 9110 §10.1.1: ignored in HTTP/1.0).
    public var expectsContinue = false

    public init() {}

    /// An `Upgrade` field with a value was sent (RFC 9110 §7.8).
    public var upgrade: Bool { known.upgrade != nil }

    /// CONNECT, or an `Upgrade` request: the gateway switches no protocol, so it answers such a
    /// request and closes (NIO's parser also stopped reading after one).
    public var switchesProtocol: Bool { method == .connect || upgrade }

    /// The value of `fields[index]` in `bytes`, the buffer the head was parsed from.
    public func value(_ index: Int, in bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[fields[index].value])
    }

    /// `fields[index]`'s name equals `lowercased`, without regard to case.
    public func fieldName(_ index: Int, in bytes: UnsafeRawBufferPointer, is lowercased: StaticString) -> Bool {
        HTTPBytes.tokenEquals(bytes, fields[index].name, lowercased)
    }
}
