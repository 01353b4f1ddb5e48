/// A strict, incremental, zero-copy parser of the HTTP/1.1 response heads an instance sends
/// (RFC 9112 §4–§7), the counterpart of `RequestHeadParser`: an instance is outside the gateway
/// too, and a head two readers could read differently is refused, not repaired.
///
/// Call `parse` with the bytes from the head's first byte each time more have arrived; it
/// remembers where it stopped and looks at each byte once. It returns nil until the head is
/// complete, then the head (and is ready for the next one, whose bytes start at `head.length`),
/// or throws why the head is refused. Every refusal is final until `reset()`.
///
/// The status line is `HTTP/1.1` or `HTTP/1.0`, SP, three digits from 100 to 599, then SP and
/// a reason phrase (or, as llhttp allows, CRLF at once). Fields are read as in requests: no
/// bare CR or LF, no obs-fold, no whitespace before a colon, no controls; one `Content-Length`,
/// at most one `Transfer-Encoding`, which must be `chunked` alone, never both.
public struct ResponseHeadParser: Sendable {
    public struct Limits: Sendable, Equatable {
        /// The whole head, from its first byte to the end of its empty line.
        public var maxHeadBytes: Int
        /// Field lines.
        public var maxFieldCount: Int

        public init(maxHeadBytes: Int = 64 * 1024, maxFieldCount: Int = 256) {
            self.maxHeadBytes = max(maxHeadBytes, 16)
            self.maxFieldCount = max(maxFieldCount, 0)
        }
    }

    private enum Stage: UInt8, Sendable {
        case version, status, reason, statusLineLF
        /// The field lines and the empty line, read by `fields`.
        case fields
    }

    public let limits: Limits
    private var stage = Stage.version
    private var position = 0
    /// Where the status code or the reason phrase starts.
    private var mark = 0
    private var fields = FieldSectionScanner()
    private var head = ResponseHead()
    private var failure: ResponseHeadError?

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Forgets a partly read head (or a refusal): the next call starts a new head.
    public mutating func reset() {
        stage = .version
        position = 0
        mark = 0
        fields = FieldSectionScanner()
        failure = nil
        head = ResponseHead()
    }

    /// Reads on in `bytes` (the head's bytes from its first, as many as have arrived; the same
    /// bytes as the previous call's and maybe more). `answeringHEAD`: the request was a HEAD, so
    /// the answer has no body whatever its fields say. Nil: the head is not complete yet.
    public mutating func parse(_ bytes: UnsafeRawBufferPointer, answeringHEAD: Bool = false) throws(ResponseHeadError) -> ResponseHead? {
        if let failure { throw failure }
        do {
            return try step(bytes, answeringHEAD: answeringHEAD)
        } catch {
            failure = error
            throw error
        }
    }

    private mutating func step(_ bytes: UnsafeRawBufferPointer, answeringHEAD: Bool) throws(ResponseHeadError) -> ResponseHead? {
        // Bytes past the size limit are never looked at (the same verdict however they were split).
        let end = min(bytes.count, limits.maxHeadBytes)
        var i = position
        scan: while i < end {
            switch stage {
            case .version:
                // "HTTP/1.1 " or "HTTP/1.0 ", checked byte by byte.
                while i < end && i < 9 {
                    try Self.versionByte(bytes[i], at: i)
                    i += 1
                }
                if i < 9 { break scan }
                head.version = bytes[7] == UInt8(ascii: "1") ? .http11 : .http10
                mark = i
                stage = .status

            case .status:
                while i < end && i < mark + 3 {
                    let b = bytes[i]
                    guard HTTPBytes.isDigit(b) else { throw .invalidStatus.at(i) }
                    // 100...599 (RFC 9110 §15): a first digit of 0 or 6 to 9 is no status class.
                    if i == mark, b < UInt8(ascii: "1") || b > UInt8(ascii: "5") { throw .invalidStatus.at(i) }
                    head.status = head.status * 10 + Int(b &- UInt8(ascii: "0"))
                    i += 1
                }
                if i == end { break scan }
                let b = bytes[i]
                if b == HTTPBytes.sp {
                    i += 1
                    mark = i
                    stage = .reason
                } else if b == HTTPBytes.cr {
                    head.reason = i..<i
                    i += 1
                    stage = .statusLineLF
                } else if b == HTTPBytes.lf {
                    throw .bareLineFeed.at(i)
                } else {
                    throw .invalidStatus.at(i)
                }

            case .reason:
                // reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ) (RFC 9112 §4).
                while i < end, HTTPBytes.isFieldVisible(bytes[i]) || HTTPBytes.isWhitespace(bytes[i]) { i += 1 }
                if i == end { break scan }
                let b = bytes[i]
                guard b == HTTPBytes.cr else {
                    if b == HTTPBytes.lf { throw .bareLineFeed.at(i) }
                    throw .invalidReason.at(i)
                }
                head.reason = mark..<i
                i += 1
                stage = .statusLineLF

            case .statusLineLF:
                guard bytes[i] == HTTPBytes.lf else { throw .bareCarriageReturn.at(i) }
                i += 1
                stage = .fields

            case .fields:
                switch try fields.next(bytes, at: &i, end: end, refusing: ResponseHeadError.self) {
                case nil:
                    break scan
                case .field(let name, let value, let line)?:
                    try addField(bytes, name: name, value: value, line: line, at: name.lowerBound)
                case .end(let length)?:
                    head.length = length
                    try finish(answeringHEAD: answeringHEAD, at: length)
                    let complete = head
                    reset()
                    return complete
                }
            }
        }
        if end == limits.maxHeadBytes { throw .headTooLarge.at(end) }
        position = i
        return nil
    }

    /// The `k`th byte of "HTTP/1.1 " or "HTTP/1.0 ".
    private static func versionByte(_ b: UInt8, at k: Int) throws(ResponseHeadError) {
        switch k {
        case 0: guard b == UInt8(ascii: "H") else { throw .invalidVersion.at(k) }
        case 1, 2: guard b == UInt8(ascii: "T") else { throw .invalidVersion.at(k) }
        case 3: guard b == UInt8(ascii: "P") else { throw .invalidVersion.at(k) }
        case 4: guard b == UInt8(ascii: "/") else { throw .invalidVersion.at(k) }
        case 5:
            guard HTTPBytes.isDigit(b) else { throw .invalidVersion.at(k) }
            guard b == UInt8(ascii: "1") else { throw .unsupportedVersion.at(k) }
        case 6: guard b == UInt8(ascii: ".") else { throw .invalidVersion.at(k) }
        case 7:
            guard HTTPBytes.isDigit(b) else { throw .invalidVersion.at(k) }
            guard b == UInt8(ascii: "0") || b == UInt8(ascii: "1") else { throw .unsupportedVersion.at(k) }
        default: guard b == HTTPBytes.sp else { throw .invalidVersion.at(k) }
        }
    }

    // MARK: Fields

    private mutating func addField(_ bytes: UnsafeRawBufferPointer, name: Range<Int>, value: Range<Int>, line: Range<Int>,
                                   at offset: Int) throws(ResponseHeadError) {
        let index = head.fields.count
        guard index < limits.maxFieldCount else { throw .tooManyFields.at(offset) }
        if index == 0 { head.fields.reserveCapacity(min(limits.maxFieldCount, 16)) }
        head.fields.append(ResponseHead.Field(name: name, value: value))
        switch name.count {
        case 10, 16:
            // `Proxy-Connection` is no standard field, but llhttp reads it as `Connection`; so
            // does this parser (both are dropped when the answer is forwarded).
            if Self.isConnectionName(bytes, name) {
                // A tab inside or after the value: llhttp 9.3 reads "close\t" as another token.
                guard !FieldValues.containsTab(bytes, line) else { throw .invalidConnection.at(offset) }
                guard let options = FieldValues.connectionOptions(bytes, value) else { throw .invalidConnection.at(offset) }
                head.connectionOptions.formUnion(options)
                if head.known.connection == nil { head.known.connection = index }
                head.known.connectionCount += 1
            }
        case 14:
            if HTTPBytes.tokenEquals(bytes, name, "content-length") {
                guard head.known.contentLength == nil else { throw .duplicateContentLength.at(offset) }
                guard !FieldValues.containsTab(bytes, line) else { throw .invalidContentLength.at(offset) }
                guard let length = FieldValues.contentLength(bytes, value) else { throw .invalidContentLength.at(offset) }
                head.contentLength = length
                head.known.contentLength = index
            }
        case 17:
            if HTTPBytes.tokenEquals(bytes, name, "transfer-encoding") {
                guard head.known.transferEncoding == nil else { throw .duplicateTransferEncoding.at(offset) }
                guard !FieldValues.containsTab(bytes, line) else { throw .unsupportedTransferCoding.at(offset) }
                guard HTTPBytes.tokenEquals(bytes, value, "chunked") else { throw .unsupportedTransferCoding.at(offset) }
                head.known.transferEncoding = index
            }
        default:
            break
        }
    }

    /// `Connection` or `Proxy-Connection`, without regard to case.
    static func isConnectionName(_ bytes: UnsafeRawBufferPointer, _ name: Range<Int>) -> Bool {
        HTTPBytes.tokenEquals(bytes, name, "connection") || HTTPBytes.tokenEquals(bytes, name, "proxy-connection")
    }

    /// Framing (RFC 9112 §6.3) and persistence (§9.3), from the fields together.
    private mutating func finish(answeringHEAD: Bool, at offset: Int) throws(ResponseHeadError) {
        if head.known.transferEncoding != nil {
            if head.known.contentLength != nil { throw .contentLengthWithTransferEncoding.at(offset) }
            if head.version == .http10 { throw .transferEncodingInHTTP10.at(offset) }
        }
        let options = head.connectionOptions
        if options.contains(.close) && options.contains(.keepAlive) { throw .conflictingConnectionOptions.at(offset) }
        let status = head.status
        if status < 200 && (head.known.contentLength != nil || head.known.transferEncoding != nil) {
            throw .framingInInformational.at(offset)
        }
        if answeringHEAD || status < 200 || status == 204 || status == 304 {
            head.framing = .none
        } else if head.known.transferEncoding != nil {
            head.framing = .chunked
        } else if let length = head.contentLength {
            head.framing = .contentLength(length)
        } else {
            head.framing = .untilClose
        }
        switch head.version {
        case .http11: head.keepAlive = !options.contains(.close)
        case .http10: head.keepAlive = options.contains(.keepAlive)
        }
        // A body ended by the close, or a switch to another protocol: the connection is spent.
        if head.framing == .untilClose || status == 101 { head.keepAlive = false }
    }
}
