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
        case fieldStart, name, valueStart, value, fieldLF, finalLF
    }

    public let limits: Limits
    private var stage = Stage.version
    private var position = 0
    private var mark = 0
    private var lineStart = 0
    private var nameEnd = 0
    private var valueEnd = 0
    private var lineEnd = 0
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
        lineStart = 0
        nameEnd = 0
        valueEnd = 0
        lineEnd = 0
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
                stage = .fieldStart

            case .fieldStart:
                let b = bytes[i]
                if b == HTTPBytes.cr {
                    i += 1
                    stage = .finalLF
                    continue scan
                }
                if HTTPBytes.isWhitespace(b) { throw .obsoleteLineFolding.at(i) }
                if b == HTTPBytes.lf { throw .bareLineFeed.at(i) }
                guard HTTPBytes.isToken(b) else { throw .invalidFieldName.at(i) }
                lineStart = i
                stage = .name

            case .name:
                while i < end && HTTPBytes.isToken(bytes[i]) { i += 1 }
                if i == end { break scan }
                let b = bytes[i]
                guard b == UInt8(ascii: ":") else {
                    if HTTPBytes.isWhitespace(b) { throw .whitespaceBeforeColon.at(i) }
                    if b == HTTPBytes.cr || b == HTTPBytes.lf { throw .fieldWithoutColon.at(i) }
                    throw .invalidFieldName.at(i)
                }
                nameEnd = i
                i += 1
                stage = .valueStart

            case .valueStart:
                while i < end && HTTPBytes.isWhitespace(bytes[i]) { i += 1 }
                if i == end { break scan }
                mark = i
                valueEnd = i
                stage = .value

            case .value:
                var last = valueEnd
                while i < end {
                    let b = bytes[i]
                    if HTTPBytes.isFieldVisible(b) {
                        i += 1
                        last = i
                    } else if HTTPBytes.isWhitespace(b) {
                        i += 1
                    } else {
                        break
                    }
                }
                valueEnd = last
                if i == end { break scan }
                let b = bytes[i]
                guard b == HTTPBytes.cr else {
                    if b == HTTPBytes.lf { throw .bareLineFeed.at(i) }
                    throw .invalidFieldValue.at(i)
                }
                lineEnd = i
                i += 1
                stage = .fieldLF

            case .fieldLF:
                guard bytes[i] == HTTPBytes.lf else { throw .bareCarriageReturn.at(i) }
                try addField(bytes, name: lineStart..<nameEnd, value: mark..<valueEnd, line: mark..<lineEnd, at: lineStart)
                i += 1
                stage = .fieldStart

            case .finalLF:
                guard bytes[i] == HTTPBytes.lf else { throw .bareCarriageReturn.at(i) }
                i += 1
                head.length = i
                try finish(answeringHEAD: answeringHEAD, at: i)
                let complete = head
                reset()
                return complete
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
                guard !Self.containsTab(bytes, line) else { throw .invalidConnection.at(offset) }
                head.connectionOptions.formUnion(try Self.connectionOptions(bytes, value, at: offset))
                if head.known.connection == nil { head.known.connection = index }
                head.known.connectionCount += 1
            }
        case 14:
            if HTTPBytes.tokenEquals(bytes, name, "content-length") {
                guard head.known.contentLength == nil else { throw .duplicateContentLength.at(offset) }
                guard !Self.containsTab(bytes, line) else { throw .invalidContentLength.at(offset) }
                head.contentLength = try Self.contentLength(bytes, value, at: offset)
                head.known.contentLength = index
            }
        case 17:
            if HTTPBytes.tokenEquals(bytes, name, "transfer-encoding") {
                guard head.known.transferEncoding == nil else { throw .duplicateTransferEncoding.at(offset) }
                guard !Self.containsTab(bytes, line) else { throw .unsupportedTransferCoding.at(offset) }
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

    private static func containsTab(_ bytes: UnsafeRawBufferPointer, _ line: Range<Int>) -> Bool {
        for k in line where bytes[k] == HTTPBytes.htab { return true }
        return false
    }

    /// Content-Length = 1*DIGIT (RFC 9110 §8.6), at most Int.max.
    private static func contentLength(_ bytes: UnsafeRawBufferPointer, _ value: Range<Int>, at offset: Int) throws(ResponseHeadError) -> Int {
        guard !value.isEmpty else { throw .invalidContentLength.at(offset) }
        var n = 0
        for k in value {
            let b = bytes[k]
            guard HTTPBytes.isDigit(b) else { throw .invalidContentLength.at(offset) }
            let (times10, o1) = n.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(Int(b &- UInt8(ascii: "0")))
            guard !o1, !o2 else { throw .invalidContentLength.at(offset) }
            n = sum
        }
        return n
    }

    /// Connection = #connection-option (RFC 9110 §7.6.1; empty list elements allowed).
    private static func connectionOptions(_ bytes: UnsafeRawBufferPointer, _ value: Range<Int>, at offset: Int) throws(ResponseHeadError) -> ResponseHead.ConnectionOptions {
        var options: ResponseHead.ConnectionOptions = []
        var k = value.lowerBound
        while k < value.upperBound {
            while k < value.upperBound, HTTPBytes.isWhitespace(bytes[k]) || bytes[k] == UInt8(ascii: ",") { k += 1 }
            let start = k
            while k < value.upperBound, HTTPBytes.isToken(bytes[k]) { k += 1 }
            let token = start..<k
            while k < value.upperBound, HTTPBytes.isWhitespace(bytes[k]) { k += 1 }
            guard k == value.upperBound || bytes[k] == UInt8(ascii: ",") else { throw .invalidConnection.at(offset) }
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
