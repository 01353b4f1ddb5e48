/// Why a request head was refused. Every one of these ends the connection: after a head the
/// gateway could not read, it cannot know where the next request starts (RFC 9112 §11.2), so
/// the data plane answers 400 (or the status its mapping gives) and closes.
///
/// Compared by reason only; `offset` (where in the head it was found) is for logs.
public struct RequestHeadError: Error, Sendable, Equatable, CustomStringConvertible {
    private enum Code: UInt8, Sendable {
        case bareLineFeed, bareCarriageReturn
        case invalidMethod, unsupportedMethod, invalidTarget, invalidVersion, unsupportedVersion
        case requestLineTooLong, headTooLarge, tooManyFields
        case invalidFieldName, whitespaceBeforeColon, fieldWithoutColon, obsoleteLineFolding, invalidFieldValue
        case invalidContentLength, duplicateContentLength, contentLengthWithTransferEncoding
        case unsupportedTransferCoding, transferEncodingInHTTP10
        case duplicateField, missingHost, invalidHost
        case invalidConnection, conflictingConnectionOptions, unsupportedExpectation, contentWithConnect
    }

    private let code: Code
    /// Where the parser was when it refused, from the first byte of the head.
    public let offset: Int

    private init(_ code: Code, offset: Int = 0) {
        self.code = code
        self.offset = offset
    }

    func at(_ offset: Int) -> RequestHeadError { RequestHeadError(code, offset: offset) }

    public static func == (a: RequestHeadError, b: RequestHeadError) -> Bool { a.code == b.code }

    /// A line ended by LF alone (RFC 9112 §2.2: only CRLF; a bare LF is how requests are
    /// smuggled past a front end that reads lines differently).
    public static let bareLineFeed = RequestHeadError(.bareLineFeed)
    /// A CR not followed by LF (RFC 9112 §2.2).
    public static let bareCarriageReturn = RequestHeadError(.bareCarriageReturn)
    /// The method is not a token (RFC 9112 §3.1), or the request line is not
    /// `method SP request-target SP HTTP-version` with single spaces.
    public static let invalidMethod = RequestHeadError(.invalidMethod)
    /// A well-formed method the gateway does not know (RFC 9110 §9.1: 501 would also fit).
    public static let unsupportedMethod = RequestHeadError(.unsupportedMethod)
    /// A request-target with a character outside RFC 3986, or in a form its method may not use
    /// (RFC 9112 §3.2: authority-form only for CONNECT, asterisk-form only for OPTIONS).
    public static let invalidTarget = RequestHeadError(.invalidTarget)
    /// Not `HTTP/DIGIT.DIGIT` followed by CRLF (RFC 9112 §2.3).
    public static let invalidVersion = RequestHeadError(.invalidVersion)
    /// A well-formed version other than HTTP/1.0 and HTTP/1.1 (RFC 9110 §15.6.6: 505).
    public static let unsupportedVersion = RequestHeadError(.unsupportedVersion)
    /// A request line longer than the limit (RFC 9112 §3: 414 for a long target).
    public static let requestLineTooLong = RequestHeadError(.requestLineTooLong)
    /// The head is larger than `max_header_bytes` (RFC 6585 §5: 431).
    public static let headTooLarge = RequestHeadError(.headTooLarge)
    /// More field lines than `max_header_count` (RFC 6585 §5: 431).
    public static let tooManyFields = RequestHeadError(.tooManyFields)
    /// An empty field name or one with a non-token character (RFC 9110 §5.1).
    public static let invalidFieldName = RequestHeadError(.invalidFieldName)
    /// Whitespace between a field name and its colon (RFC 9112 §5.1: MUST be rejected with 400).
    public static let whitespaceBeforeColon = RequestHeadError(.whitespaceBeforeColon)
    /// A field line without a colon.
    public static let fieldWithoutColon = RequestHeadError(.fieldWithoutColon)
    /// A line starting with whitespace: obs-fold, or whitespace between the request line and
    /// the first field (RFC 9112 §5.2, §2.2: rejected rather than unfolded).
    public static let obsoleteLineFolding = RequestHeadError(.obsoleteLineFolding)
    /// NUL, another control character or DEL in a field value (RFC 9110 §5.5).
    public static let invalidFieldValue = RequestHeadError(.invalidFieldValue)
    /// A `Content-Length` that is not one decimal number that fits in 63 bits (RFC 9110 §8.6).
    public static let invalidContentLength = RequestHeadError(.invalidContentLength)
    /// More than one `Content-Length` field, even with equal values (RFC 9112 §6.3 lets a
    /// recipient merge equal ones; refusing is the stricter reading, and llhttp's).
    public static let duplicateContentLength = RequestHeadError(.duplicateContentLength)
    /// `Content-Length` and `Transfer-Encoding` together (RFC 9112 §6.1: a request smuggling
    /// pattern; a server MAY reject it and MUST close after it).
    public static let contentLengthWithTransferEncoding = RequestHeadError(.contentLengthWithTransferEncoding)
    /// A `Transfer-Encoding` other than the single coding `chunked` (RFC 9112 §6.1: chunked
    /// must be final and applied once; the gateway decodes no other coding).
    public static let unsupportedTransferCoding = RequestHeadError(.unsupportedTransferCoding)
    /// `Transfer-Encoding` in an HTTP/1.0 request (RFC 9112 §6.1: its framing is faulty).
    public static let transferEncodingInHTTP10 = RequestHeadError(.transferEncodingInHTTP10)
    /// A second `Host`, `Authorization`, `Transfer-Encoding`, `Expect` or `X-Request-Id`: which
    /// one counts would depend on who reads it (RFC 9112 §3.2 for Host).
    public static let duplicateField = RequestHeadError(.duplicateField)
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2: MUST be answered 400).
    public static let missingHost = RequestHeadError(.missingHost)
    /// A `Host` value that is not an authority (RFC 9112 §3.2).
    public static let invalidHost = RequestHeadError(.invalidHost)
    /// A `Connection` value that is not a list of tokens (RFC 9110 §7.6.1).
    public static let invalidConnection = RequestHeadError(.invalidConnection)
    /// `Connection` with both `close` and `keep-alive`: readers disagree on which wins.
    public static let conflictingConnectionOptions = RequestHeadError(.conflictingConnectionOptions)
    /// An `Expect` other than `100-continue` (RFC 9110 §10.1.1: 417).
    public static let unsupportedExpectation = RequestHeadError(.unsupportedExpectation)
    /// CONNECT with `Content-Length` or `Transfer-Encoding`: it has no content (RFC 9110 §9.3.6),
    /// and llhttp reads what follows as the tunnel's, not as a body.
    public static let contentWithConnect = RequestHeadError(.contentWithConnect)

    /// What went wrong, for the error body and logs.
    public var description: String {
        switch code {
        case .bareLineFeed: "a line ends with LF without CR"
        case .bareCarriageReturn: "a CR is not followed by LF"
        case .invalidMethod: "the request line is not 'method SP target SP version'"
        case .unsupportedMethod: "unknown method"
        case .invalidTarget: "invalid request target"
        case .invalidVersion: "invalid HTTP version"
        case .unsupportedVersion: "only HTTP/1.0 and HTTP/1.1 are supported"
        case .requestLineTooLong: "request line too long"
        case .headTooLarge: "request head too large"
        case .tooManyFields: "too many header fields"
        case .invalidFieldName: "invalid header field name"
        case .whitespaceBeforeColon: "whitespace between a header field name and its colon"
        case .fieldWithoutColon: "a header field line without a colon"
        case .obsoleteLineFolding: "a header line starts with whitespace (obsolete line folding)"
        case .invalidFieldValue: "invalid character in a header field value"
        case .invalidContentLength: "invalid Content-Length"
        case .duplicateContentLength: "more than one Content-Length"
        case .contentLengthWithTransferEncoding: "both Content-Length and Transfer-Encoding"
        case .unsupportedTransferCoding: "Transfer-Encoding other than chunked"
        case .transferEncodingInHTTP10: "Transfer-Encoding in an HTTP/1.0 request"
        case .duplicateField: "a header field that may appear once appears twice"
        case .missingHost: "an HTTP/1.1 request without Host"
        case .invalidHost: "invalid Host"
        case .invalidConnection: "invalid Connection"
        case .conflictingConnectionOptions: "Connection asks for both close and keep-alive"
        case .unsupportedExpectation: "an Expect other than 100-continue"
        case .contentWithConnect: "CONNECT with Content-Length or Transfer-Encoding"
        }
    }

    /// The status RFC 9110/9112/6585 suggest; the data plane decides (today: 400 and close for
    /// all but the size limits).
    public var suggestedStatus: Int {
        switch code {
        case .requestLineTooLong: 414
        case .headTooLarge, .tooManyFields: 431
        case .unsupportedVersion: 505
        case .unsupportedMethod: 501
        case .unsupportedExpectation: 417
        default: 400
        }
    }
}
