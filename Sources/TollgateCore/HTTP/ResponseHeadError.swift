/// Why an instance's response head was refused. An instance is outside the gateway too: after a
/// head the gateway could not read, it cannot know where the answer ends, so the try fails as a
/// protocol error (502 to the client if nothing was sent yet) and the connection is closed.
///
/// Compared by reason only; `offset` (where in the head it was found) is for logs.
public struct ResponseHeadError: Error, Sendable, Equatable, CustomStringConvertible {
    private enum Code: UInt8, Sendable {
        case bareLineFeed, bareCarriageReturn
        case invalidVersion, unsupportedVersion, invalidStatus, invalidReason
        case headTooLarge, tooManyFields
        case invalidFieldName, whitespaceBeforeColon, fieldWithoutColon, obsoleteLineFolding, invalidFieldValue
        case invalidContentLength, duplicateContentLength, contentLengthWithTransferEncoding
        case unsupportedTransferCoding, duplicateTransferEncoding, transferEncodingInHTTP10
        case invalidConnection, conflictingConnectionOptions, framingInInformational
    }

    private let code: Code
    /// Where the parser was when it refused, from the first byte of the head.
    public let offset: Int

    private init(_ code: Code, offset: Int = 0) {
        self.code = code
        self.offset = offset
    }

    func at(_ offset: Int) -> ResponseHeadError { ResponseHeadError(code, offset: offset) }

    public static func == (a: ResponseHeadError, b: ResponseHeadError) -> Bool { a.code == b.code }

    /// A line ended by LF alone (RFC 9112 §2.2).
    public static let bareLineFeed = ResponseHeadError(.bareLineFeed)
    /// A CR not followed by LF (RFC 9112 §2.2).
    public static let bareCarriageReturn = ResponseHeadError(.bareCarriageReturn)
    /// The head does not start with `HTTP/DIGIT.DIGIT SP` (RFC 9112 §4); an empty line before
    /// the status line is refused too (it would be bytes past the previous answer).
    public static let invalidVersion = ResponseHeadError(.invalidVersion)
    /// A well-formed version other than HTTP/1.0 and HTTP/1.1.
    public static let unsupportedVersion = ResponseHeadError(.unsupportedVersion)
    /// Not three digits from 100 to 599 followed by SP or CRLF (RFC 9110 §15).
    public static let invalidStatus = ResponseHeadError(.invalidStatus)
    /// A control character (but HTAB) or DEL in the reason phrase (RFC 9112 §4).
    public static let invalidReason = ResponseHeadError(.invalidReason)
    /// The head is larger than the limit.
    public static let headTooLarge = ResponseHeadError(.headTooLarge)
    /// More field lines than the limit.
    public static let tooManyFields = ResponseHeadError(.tooManyFields)
    /// An empty field name or one with a non-token character (RFC 9110 §5.1).
    public static let invalidFieldName = ResponseHeadError(.invalidFieldName)
    /// Whitespace between a field name and its colon (RFC 9112 §5.1).
    public static let whitespaceBeforeColon = ResponseHeadError(.whitespaceBeforeColon)
    /// A field line without a colon.
    public static let fieldWithoutColon = ResponseHeadError(.fieldWithoutColon)
    /// A line starting with whitespace: obs-fold (RFC 9112 §5.2), refused rather than unfolded.
    public static let obsoleteLineFolding = ResponseHeadError(.obsoleteLineFolding)
    /// NUL, another control character or DEL in a field value (RFC 9110 §5.5).
    public static let invalidFieldValue = ResponseHeadError(.invalidFieldValue)
    /// A `Content-Length` that is not one decimal number that fits in 63 bits (RFC 9110 §8.6).
    public static let invalidContentLength = ResponseHeadError(.invalidContentLength)
    /// More than one `Content-Length`, even with equal values (llhttp refuses them too).
    public static let duplicateContentLength = ResponseHeadError(.duplicateContentLength)
    /// `Content-Length` and `Transfer-Encoding` together (RFC 9112 §6.1, §6.3: a smuggling pattern).
    public static let contentLengthWithTransferEncoding = ResponseHeadError(.contentLengthWithTransferEncoding)
    /// A `Transfer-Encoding` other than the single coding `chunked`: a last coding other than
    /// chunked leaves the length to the close (RFC 9112 §6.3), and the gateway re-frames bodies,
    /// so it could not pass another transfer coding on.
    public static let unsupportedTransferCoding = ResponseHeadError(.unsupportedTransferCoding)
    /// A second `Transfer-Encoding` field.
    public static let duplicateTransferEncoding = ResponseHeadError(.duplicateTransferEncoding)
    /// `Transfer-Encoding` in an HTTP/1.0 answer (RFC 9112 §6.1: faulty framing).
    public static let transferEncodingInHTTP10 = ResponseHeadError(.transferEncodingInHTTP10)
    /// A `Connection` value that is not a list of tokens (RFC 9110 §7.6.1).
    public static let invalidConnection = ResponseHeadError(.invalidConnection)
    /// `Connection` with both `close` and `keep-alive`.
    public static let conflictingConnectionOptions = ResponseHeadError(.conflictingConnectionOptions)
    /// `Content-Length` or `Transfer-Encoding` in a 1xx answer (RFC 9110 §8.6, RFC 9112 §6.1: a
    /// server MUST NOT send them; llhttp would read a body after some 1xx heads).
    public static let framingInInformational = ResponseHeadError(.framingInInformational)

    public var description: String {
        switch code {
        case .bareLineFeed: "a line ends with LF without CR"
        case .bareCarriageReturn: "a CR is not followed by LF"
        case .invalidVersion: "the status line does not start with an HTTP version"
        case .unsupportedVersion: "an HTTP version other than 1.0 and 1.1"
        case .invalidStatus: "invalid status code"
        case .invalidReason: "invalid character in the reason phrase"
        case .headTooLarge: "response head too large"
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
        case .duplicateTransferEncoding: "more than one Transfer-Encoding"
        case .transferEncodingInHTTP10: "Transfer-Encoding in an HTTP/1.0 answer"
        case .invalidConnection: "invalid Connection"
        case .conflictingConnectionOptions: "Connection asks for both close and keep-alive"
        case .framingInInformational: "Content-Length or Transfer-Encoding in a 1xx answer"
        }
    }
}
