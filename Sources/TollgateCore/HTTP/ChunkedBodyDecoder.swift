/// Why a chunked body was refused; like a refused head, it ends the connection (the next
/// request's start is unknown). Compared by reason only.
public struct ChunkedBodyError: Error, Sendable, Equatable, CustomStringConvertible {
    private enum Code: UInt8, Sendable {
        case invalidChunkSize, chunkSizeTooLarge, invalidChunkExtension, chunkLineTooLong
        case missingCRLFAfterData, bareLineFeed, bareCarriageReturn
        case invalidTrailer, forbiddenTrailer, trailersTooLarge, bodyTooLarge
    }

    private let code: Code
    /// Bytes of the body (framing included) before the refusal, for logs.
    public let offset: Int

    private init(_ code: Code, offset: Int = 0) {
        self.code = code
        self.offset = offset
    }

    func at(_ offset: Int) -> ChunkedBodyError { ChunkedBodyError(code, offset: offset) }

    public static func == (a: ChunkedBodyError, b: ChunkedBodyError) -> Bool { a.code == b.code }

    /// chunk-size is not 1*HEXDIG directly followed by ";" or CRLF (no whitespace: llhttp
    /// refuses it too, and RFC 9112 §7.1 has none there).
    public static let invalidChunkSize = ChunkedBodyError(.invalidChunkSize)
    /// More than 16 hex digits, or more than fits in 63 bits.
    public static let chunkSizeTooLarge = ChunkedBodyError(.chunkSizeTooLarge)
    /// Not `;name[=token|quoted-string]` (RFC 9112 §7.1.1).
    public static let invalidChunkExtension = ChunkedBodyError(.invalidChunkExtension)
    /// A chunk-size line with more extension bytes than allowed.
    public static let chunkLineTooLong = ChunkedBodyError(.chunkLineTooLong)
    /// chunk-data not followed by CRLF.
    public static let missingCRLFAfterData = ChunkedBodyError(.missingCRLFAfterData)
    public static let bareLineFeed = ChunkedBodyError(.bareLineFeed)
    public static let bareCarriageReturn = ChunkedBodyError(.bareCarriageReturn)
    /// A trailer line that is not a valid field line (RFC 9112 §7.1.2, §5).
    public static let invalidTrailer = ChunkedBodyError(.invalidTrailer)
    /// A trailer field that would govern framing, the connection, routing or authentication
    /// (RFC 9110 §6.5.1: such fields MUST NOT be sent as trailers); llhttp, for one, fails on a
    /// `Content-Length` trailer and acts on a `Connection` one.
    public static let forbiddenTrailer = ChunkedBodyError(.forbiddenTrailer)
    /// More trailer bytes than allowed.
    public static let trailersTooLarge = ChunkedBodyError(.trailersTooLarge)
    /// The chunks announce more than `maxBodyBytes` in all.
    public static let bodyTooLarge = ChunkedBodyError(.bodyTooLarge)

    public var description: String {
        switch code {
        case .invalidChunkSize: "invalid chunk size"
        case .chunkSizeTooLarge: "chunk size too large"
        case .invalidChunkExtension: "invalid chunk extension"
        case .chunkLineTooLong: "chunk size line too long"
        case .missingCRLFAfterData: "chunk data not followed by CRLF"
        case .bareLineFeed: "a line ends with LF without CR"
        case .bareCarriageReturn: "a CR is not followed by LF"
        case .invalidTrailer: "invalid trailer field"
        case .forbiddenTrailer: "a trailer field that may only be sent in the header section"
        case .trailersTooLarge: "trailer section too large"
        case .bodyTooLarge: "body too large"
        }
    }
}

/// Decodes a chunked body (RFC 9112 §7.1) as its bytes arrive, without copying them: it hands
/// back the ranges of chunk data inside each buffer it is given. Buffers need not be kept:
/// everything it must remember between them (chunk size, where it is in a line) is its own.
///
/// Extensions are allowed, checked against the grammar and ignored (RFC 9112 §7.1.1: a
/// recipient MUST ignore unrecognised ones); the chunk-size line is bounded. Trailer fields
/// are checked as field lines, bounded, and dropped: RFC 9110 §6.5.1 lets a recipient discard
/// them, the gateway forwards a body by its own framing, and none of its decisions may depend
/// on a field that arrives after the body. Those that could only mean something in the header
/// section (framing, connection, Host, Authorization, Expect) refuse the body instead of being
/// dropped: another reader might act on them (llhttp does).
public struct ChunkedBodyDecoder: Sendable {
    public struct Limits: Sendable, Equatable {
        /// Chunk data in all.
        public var maxBodyBytes: Int
        /// Bytes of a chunk-size line after the size (its extensions).
        public var maxExtensionBytes: Int
        /// The trailer section, its final CRLF included.
        public var maxTrailerBytes: Int

        public init(maxBodyBytes: Int, maxExtensionBytes: Int = 1024, maxTrailerBytes: Int = 4096) {
            self.maxBodyBytes = max(maxBodyBytes, 0)
            self.maxExtensionBytes = max(maxExtensionBytes, 0)
            self.maxTrailerBytes = max(maxTrailerBytes, 2)
        }
    }

    public enum Event: Sendable, Equatable {
        /// Chunk data: this range of the buffer given (never empty).
        case data(Range<Int>)
        /// The buffer is used up; call again with the next one from offset 0.
        case needMore
        /// The body is complete; the bytes from `offset` on are the next request's.
        case end
    }

    private enum Stage: UInt8, Sendable {
        case size, extensionName, extensionValueStart, extensionToken, quoted, quotedPair, afterQuoted, sizeLF
        case data, dataCR, dataLF
        case trailerStart, trailerName, trailerValue, trailerLF, finalLF, done
    }

    public let limits: Limits
    private var stage = Stage.size
    private var digits = 0
    private var size = 0
    /// Chunk data still to come in the current chunk.
    private var remaining = 0
    private var total = 0
    /// Extension bytes of the current line, or trailer bytes so far.
    private var lineBytes = 0
    /// The current trailer field's name, lower-cased, as far as a forbidden name could go.
    private var trailerName: [UInt8] = []
    /// Bytes consumed since the start of the body, for error offsets.
    private var consumed = 0
    private var failure: ChunkedBodyError?

    public init(limits: Limits) {
        self.limits = limits
    }

    /// The whole body and its trailers have been read.
    public var isComplete: Bool { stage == .done }

    /// Data bytes delivered so far.
    public var bodyBytes: Int { total - remaining }

    /// Reads on in `bytes` from `offset`, which it moves past what it read.
    public mutating func next(_ bytes: UnsafeRawBufferPointer, from offset: inout Int) throws(ChunkedBodyError) -> Event {
        if let failure { throw failure }
        let start = offset
        do {
            let event = try step(bytes, &offset)
            consumed += offset - start
            return event
        } catch {
            failure = error.at(consumed + offset - start)
            throw error.at(consumed + offset - start)
        }
    }

    private mutating func step(_ bytes: UnsafeRawBufferPointer, _ i: inout Int) throws(ChunkedBodyError) -> Event {
        let end = bytes.count
        while i < end {
            let b = bytes[i]
            switch stage {
            case .size:
                if HTTPBytes.isHexDigit(b) {
                    digits += 1
                    guard digits <= 16 else { throw .chunkSizeTooLarge }
                    let (times16, o) = size.multipliedReportingOverflow(by: 16)
                    guard !o else { throw .chunkSizeTooLarge }
                    size = times16 + HTTPBytes.hexValue(b)
                    i += 1
                    continue
                }
                guard digits > 0 else { throw .invalidChunkSize }
                if b == UInt8(ascii: ";") {
                    stage = .extensionName
                    lineBytes = 0
                    try countExtensionByte()
                } else if b == HTTPBytes.cr {
                    stage = .sizeLF
                } else {
                    throw .invalidChunkSize
                }
                i += 1

            // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ), read without the
            // whitespace, as llhttp does; ext-val = token / quoted-string (RFC 9112 §7.1.1).
            case .extensionName:
                try countExtensionByte()
                if HTTPBytes.isToken(b) {
                    stage = .extensionToken  // the name's first byte; the name goes on below
                    extensionInName = true
                } else {
                    throw .invalidChunkExtension
                }
                i += 1
            case .extensionToken:
                if HTTPBytes.isToken(b) {
                    try countExtensionByte()
                    i += 1
                } else if b == UInt8(ascii: "="), extensionInName {
                    try countExtensionByte()
                    extensionInName = false
                    stage = .extensionValueStart
                    i += 1
                } else if b == UInt8(ascii: ";") {
                    try countExtensionByte()
                    stage = .extensionName
                    i += 1
                } else if b == HTTPBytes.cr {
                    stage = .sizeLF
                    i += 1
                } else {
                    throw .invalidChunkExtension
                }
            case .extensionValueStart:
                try countExtensionByte()
                if b == UInt8(ascii: "\"") {
                    stage = .quoted
                } else if HTTPBytes.isToken(b) {
                    stage = .extensionToken
                } else {
                    throw .invalidChunkExtension
                }
                i += 1
            case .quoted:
                // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (RFC 9110 §5.6.4)
                try countExtensionByte()
                if b == UInt8(ascii: "\"") {
                    stage = .afterQuoted
                } else if b == UInt8(ascii: "\\") {
                    stage = .quotedPair
                } else if !(HTTPBytes.isFieldVisible(b) || HTTPBytes.isWhitespace(b)) {
                    throw .invalidChunkExtension
                }
                i += 1
            case .quotedPair:
                try countExtensionByte()
                guard HTTPBytes.isFieldVisible(b) || HTTPBytes.isWhitespace(b) else { throw .invalidChunkExtension }
                stage = .quoted
                i += 1
            case .afterQuoted:
                if b == UInt8(ascii: ";") {
                    try countExtensionByte()
                    stage = .extensionName
                } else if b == HTTPBytes.cr {
                    stage = .sizeLF
                } else {
                    throw .invalidChunkExtension
                }
                i += 1

            case .sizeLF:
                guard b == HTTPBytes.lf else { throw .bareCarriageReturn }
                i += 1
                if size == 0 {
                    stage = .trailerStart
                    lineBytes = 0
                } else {
                    guard size <= limits.maxBodyBytes - total else { throw .bodyTooLarge }
                    total += size
                    remaining = size
                    stage = .data
                }

            case .data:
                let n = min(remaining, end - i)
                remaining -= n
                let range = i..<(i + n)
                i += n
                if remaining == 0 { stage = .dataCR }
                return .data(range)
            case .dataCR:
                guard b == HTTPBytes.cr else { throw .missingCRLFAfterData }
                i += 1
                stage = .dataLF
            case .dataLF:
                guard b == HTTPBytes.lf else { throw .missingCRLFAfterData }
                i += 1
                stage = .size
                digits = 0
                size = 0

            // trailer-section = *( field-line CRLF ), then CRLF (RFC 9112 §7.1.2).
            case .trailerStart:
                try countTrailerByte()
                if b == HTTPBytes.cr {
                    stage = .finalLF
                } else if b == HTTPBytes.lf {
                    throw .bareLineFeed
                } else if HTTPBytes.isToken(b) {
                    stage = .trailerName
                    trailerName.removeAll(keepingCapacity: true)
                    trailerName.append(b | 0x20)
                } else {
                    throw .invalidTrailer  // obs-fold, whitespace, or not a name
                }
                i += 1
            case .trailerName:
                try countTrailerByte()
                if b == UInt8(ascii: ":") {
                    guard !Self.forbiddenTrailers.contains(trailerName) else { throw .forbiddenTrailer }
                    stage = .trailerValue
                } else if HTTPBytes.isToken(b) {
                    // `| 0x20` lower-cases letters; it maps no other token byte onto a letter or "-".
                    if trailerName.count <= Self.longestForbiddenTrailer { trailerName.append(b | 0x20) }
                } else {
                    throw .invalidTrailer
                }
                i += 1
            case .trailerValue:
                try countTrailerByte()
                if b == HTTPBytes.cr {
                    stage = .trailerLF
                } else if b == HTTPBytes.lf {
                    throw .bareLineFeed
                } else if !(HTTPBytes.isFieldVisible(b) || HTTPBytes.isWhitespace(b)) {
                    throw .invalidTrailer
                }
                i += 1
            case .trailerLF:
                try countTrailerByte()
                guard b == HTTPBytes.lf else { throw .bareCarriageReturn }
                stage = .trailerStart
                i += 1
            case .finalLF:
                guard b == HTTPBytes.lf else { throw .bareCarriageReturn }
                i += 1
                stage = .done
                return .end
            case .done:
                return .end
            }
        }
        return stage == .done ? .end : .needMore
    }

    /// Trailer names that refuse the body (see the type's documentation).
    private static let forbiddenTrailers: Set<[UInt8]> = Set([
        "content-length", "transfer-encoding", "connection", "proxy-connection", "keep-alive", "upgrade", "te",
        "trailer", "host", "authorization", "expect",
    ].map { Array($0.utf8) })
    private static let longestForbiddenTrailer = 17

    /// In an extension: reading its name (an "=" may follow) rather than its token value.
    private var extensionInName = false

    @inline(__always)
    private mutating func countExtensionByte() throws(ChunkedBodyError) {
        lineBytes += 1
        guard lineBytes <= limits.maxExtensionBytes else { throw .chunkLineTooLong }
    }

    @inline(__always)
    private mutating func countTrailerByte() throws(ChunkedBodyError) {
        lineBytes += 1
        guard lineBytes <= limits.maxTrailerBytes else { throw .trailersTooLarge }
    }
}
