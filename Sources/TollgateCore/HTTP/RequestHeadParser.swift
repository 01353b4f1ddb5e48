/// A strict, incremental, zero-copy parser of HTTP/1.1 request heads (RFC 9112 §2–§7).
///
/// It reads the bytes where they arrived and returns offset ranges (`RequestHead`), never a
/// copy. Call `parse` with the bytes from the head's first byte each time more have arrived —
/// a `ByteBuffer`'s readable bytes, say; the parser remembers where it stopped and looks at
/// each byte once, however the head is split. It returns nil until the head is complete, the
/// head once it is (then it is ready for the next head, whose bytes start at `head.length`),
/// or throws why the head is refused.
///
/// Strict by design: what two readers could read differently is refused, not repaired —
/// bare CR or LF, obs-fold, whitespace before a colon, controls and NUL, two framings, a
/// `Transfer-Encoding` other than `chunked`, unknown methods and versions. Every refusal is
/// final: the connection cannot be trusted to be in step after it.
public struct RequestHeadParser: Sendable {
    public struct Limits: Sendable, Equatable {
        /// The whole head, from its first byte to the end of its empty line.
        public var maxHeadBytes: Int
        /// Field lines.
        public var maxFieldCount: Int
        /// The request line without its CRLF (RFC 9112 §3 recommends supporting at least 8000).
        public var maxRequestLineBytes: Int

        public init(maxHeadBytes: Int = 16 * 1024, maxFieldCount: Int = 100, maxRequestLineBytes: Int = 8 * 1024) {
            self.maxHeadBytes = max(maxHeadBytes, 16)
            self.maxFieldCount = max(maxFieldCount, 0)
            self.maxRequestLineBytes = max(maxRequestLineBytes, 16)
        }
    }

    private enum Stage: UInt8, Sendable {
        case start, startLF, method, target, version, requestLineLF
        /// The field lines and the empty line, read by `fields`.
        case fields
    }

    public let limits: Limits
    /// HTTP/1.1 requests must carry `Host` (RFC 9112 §3.2). Off only to compare the parser with
    /// one that does not check it (llhttp's test vectors and the differential fuzz target).
    public let requiresHost: Bool
    private var stage = Stage.start
    /// The next byte to look at, from the head's first byte.
    private var position = 0
    /// Where the part of the request line being read (method, target, version) starts.
    private var mark = 0
    /// Where the request line starts (after the empty lines allowed before it).
    private var lineStart = 0
    private var fields = FieldSectionScanner()
    private var head = RequestHead()
    private var failure: RequestHeadError?

    public init(limits: Limits = Limits(), requiresHost: Bool = true) {
        self.limits = limits
        self.requiresHost = requiresHost
    }

    /// Forgets a partly read head (or a refusal): the next call starts a new head.
    public mutating func reset() {
        stage = .start
        position = 0
        mark = 0
        lineStart = 0
        fields = FieldSectionScanner()
        failure = nil
        head = RequestHead()
    }

    /// Reads on in `bytes` (the head's bytes from its first, as many as have arrived; the same
    /// bytes as the previous call's and maybe more). Nil: the head is not complete yet.
    public mutating func parse(_ bytes: UnsafeRawBufferPointer) throws(RequestHeadError) -> RequestHead? {
        if let failure { throw failure }
        do {
            return try step(bytes)
        } catch {
            failure = error
            throw error
        }
    }

    private mutating func step(_ bytes: UnsafeRawBufferPointer) throws(RequestHeadError) -> RequestHead? {
        // Bytes past the size limit are never looked at: a head still open there is too large,
        // the same verdict however the bytes were split.
        let end = min(bytes.count, limits.maxHeadBytes)
        var i = position
        scan: while i < end {
            switch stage {
            case .start:
                // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the
                // request line (a client's stray CRLF after a body); each must be CRLF.
                let b = bytes[i]
                if b == HTTPBytes.cr {
                    stage = .startLF
                    i += 1
                } else if b == HTTPBytes.lf {
                    throw .bareLineFeed.at(i)
                } else {
                    lineStart = i
                    mark = i
                    stage = .method
                }

            case .startLF:
                guard bytes[i] == HTTPBytes.lf else { throw .bareCarriageReturn.at(i) }
                i += 1
                stage = .start

            case .method:
                // method SP request-target SP HTTP-version CRLF, single spaces (RFC 9112 §3).
                let lineLimit = lineStart + limits.maxRequestLineBytes + 1  // where its CR may come last
                let stop = min(end, lineLimit)
                while i < stop && HTTPBytes.isToken(bytes[i]) { i += 1 }
                if i == lineLimit { throw .requestLineTooLong.at(i) }
                if i == end { break scan }
                guard bytes[i] == HTTPBytes.sp, i > mark else { throw .invalidMethod.at(i) }
                head.methodRange = mark..<i
                guard let method = Self.method(bytes, mark..<i) else { throw .unsupportedMethod.at(mark) }
                head.method = method
                i += 1
                mark = i
                stage = .target

            case .target:
                let lineLimit = lineStart + limits.maxRequestLineBytes + 1  // where its CR may come last
                let stop = min(end, lineLimit)
                while i < stop, bytes[i] > 0x20, bytes[i] < 0x7F { i += 1 }
                if i == lineLimit { throw .requestLineTooLong.at(i) }
                if i == end { break scan }
                let b = bytes[i]
                guard b == HTTPBytes.sp else {
                    if b == HTTPBytes.cr || b == HTTPBytes.lf { throw .invalidVersion.at(i) }  // no version: HTTP/0.9's form
                    throw .invalidTarget.at(i)
                }
                guard i > mark else { throw .invalidTarget.at(i) }
                head.target = mark..<i
                try readTarget(bytes)
                i += 1
                mark = i
                stage = .version

            case .version:
                // HTTP-version = "HTTP" "/" DIGIT "." DIGIT, case-sensitive (RFC 9112 §2.3),
                // checked byte by byte: a wrong version is refused before its line ends.
                let lineLimit = lineStart + limits.maxRequestLineBytes + 1  // where its CR may come last
                let stop = min(end, lineLimit)
                while i < stop {
                    let b = bytes[i]
                    if b == HTTPBytes.cr { break }
                    if b == HTTPBytes.lf { throw .bareLineFeed.at(i) }
                    // A space here is a space inside the target ("GET /a b HTTP/1.1").
                    if HTTPBytes.isWhitespace(b) { throw .invalidTarget.at(i) }
                    try Self.versionByte(b, at: i - mark, offset: i)
                    i += 1
                }
                if i == lineLimit { throw .requestLineTooLong.at(i) }
                if i == end { break scan }
                guard i - mark == 8 else { throw .invalidVersion.at(i) }
                head.version = bytes[i - 1] == UInt8(ascii: "1") ? .http11 : .http10
                i += 1
                stage = .requestLineLF

            case .requestLineLF:
                guard bytes[i] == HTTPBytes.lf else { throw .bareCarriageReturn.at(i) }
                i += 1
                stage = .fields

            case .fields:
                switch try fields.next(bytes, at: &i, end: end, refusing: RequestHeadError.self) {
                case nil:
                    break scan
                case .field(let name, let value, let line)?:
                    try addField(bytes, name: name, value: value, line: line, at: name.lowerBound)
                case .end(let length)?:
                    head.length = length
                    try finish(at: length)
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

    // MARK: The request line

    /// Methods are case-sensitive (RFC 9110 §9.1).
    private static func method(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> RequestHead.Method? {
        func equals(_ name: StaticString) -> Bool {
            guard range.count == name.utf8CodeUnitCount else { return false }
            let p = name.utf8Start
            for k in 0..<range.count where bytes[range.lowerBound + k] != p[k] { return false }
            return true
        }
        switch range.count {
        case 3: return equals("GET") ? .get : equals("PUT") ? .put : nil
        case 4: return equals("POST") ? .post : equals("HEAD") ? .head : nil
        case 5: return equals("PATCH") ? .patch : equals("TRACE") ? .trace : nil
        case 6: return equals("DELETE") ? .delete : nil
        case 7: return equals("OPTIONS") ? .options : equals("CONNECT") ? .connect : nil
        default: return nil
        }
    }

    /// The `k`th byte of the version: "HTTP/1.0" or "HTTP/1.1"; another digit where a digit
    /// belongs is a version the gateway does not speak, anything else no version at all.
    private static func versionByte(_ b: UInt8, at k: Int, offset: Int) throws(RequestHeadError) {
        switch k {
        case 0: guard b == UInt8(ascii: "H") else { throw .invalidVersion.at(offset) }
        case 1, 2: guard b == UInt8(ascii: "T") else { throw .invalidVersion.at(offset) }
        case 3: guard b == UInt8(ascii: "P") else { throw .invalidVersion.at(offset) }
        case 4: guard b == UInt8(ascii: "/") else { throw .invalidVersion.at(offset) }
        case 5:
            guard HTTPBytes.isDigit(b) else { throw .invalidVersion.at(offset) }
            guard b == UInt8(ascii: "1") else { throw .unsupportedVersion.at(offset) }
        case 6: guard b == UInt8(ascii: ".") else { throw .invalidVersion.at(offset) }
        case 7:
            guard HTTPBytes.isDigit(b) else { throw .invalidVersion.at(offset) }
            guard b == UInt8(ascii: "0") || b == UInt8(ascii: "1") else { throw .unsupportedVersion.at(offset) }
        default: throw .invalidVersion.at(offset)
        }
    }

    /// The request-target's form must suit the method (RFC 9112 §3.2): origin-form, or
    /// absolute-form (which a server MUST accept, §3.2.2; http and https only, no userinfo),
    /// authority-form for CONNECT only, "*" for OPTIONS only. Sets `path` and `query`.
    private mutating func readTarget(_ bytes: UnsafeRawBufferPointer) throws(RequestHeadError) {
        let t = head.target
        let error = RequestHeadError.invalidTarget.at(t.lowerBound)
        if head.method == .connect {
            guard Self.isAuthority(bytes, t, portRequired: true) else { throw error }
            head.path = t.upperBound..<t.upperBound
            return
        }
        var pathStart = t.lowerBound
        switch bytes[t.lowerBound] {
        case UInt8(ascii: "/"):
            break
        case UInt8(ascii: "*"):
            guard t.count == 1, head.method == .options else { throw error }
            head.path = t.upperBound..<t.upperBound
            return
        default:
            let scheme: Int
            if HTTPBytes.tokenHasPrefix(bytes, t, "http://") {
                scheme = 7
            } else if HTTPBytes.tokenHasPrefix(bytes, t, "https://") {
                scheme = 8
            } else {
                throw error
            }
            var k = t.lowerBound + scheme
            while k < t.upperBound, bytes[k] != UInt8(ascii: "/"), bytes[k] != UInt8(ascii: "?") { k += 1 }
            guard k > t.lowerBound + scheme, Self.isAuthority(bytes, (t.lowerBound + scheme)..<k, portRequired: false) else { throw error }
            pathStart = k
        }
        var k = pathStart
        var queryStart: Int?
        while k < t.upperBound {
            let b = bytes[k]
            guard HTTPBytes.isTarget(b) else { throw error }
            if b == UInt8(ascii: "%") {
                guard k + 2 < t.upperBound, HTTPBytes.isHexDigit(bytes[k + 1]), HTTPBytes.isHexDigit(bytes[k + 2]) else { throw error }
                k += 3
                continue
            }
            if b == UInt8(ascii: "?"), queryStart == nil { queryStart = k }
            k += 1
        }
        if let queryStart {
            head.path = pathStart..<queryStart
            head.query = (queryStart + 1)..<t.upperBound
        } else {
            head.path = pathStart..<t.upperBound
        }
    }

    /// host [ ":" port ] (RFC 3986 §3.2): an IP-literal in brackets, or reg-name / IPv4 of
    /// unreserved, sub-delims and pct-encoded; port digits.
    static func isAuthority(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, portRequired: Bool) -> Bool {
        var k = range.lowerBound
        let end = range.upperBound
        if k < end, bytes[k] == UInt8(ascii: "[") {
            k += 1
            let literal = k
            while k < end, bytes[k] != UInt8(ascii: "]") {
                let b = bytes[k]
                guard HTTPBytes.isHexDigit(b) || b == UInt8(ascii: ":") || b == UInt8(ascii: ".") else { return false }
                k += 1
            }
            guard k < end, k > literal else { return false }
            k += 1
        } else {
            let host = k
            while k < end, bytes[k] != UInt8(ascii: ":") {
                let b = bytes[k]
                guard HTTPBytes.isAuthority(b), b != UInt8(ascii: "["), b != UInt8(ascii: "]") else { return false }
                if b == UInt8(ascii: "%") {
                    guard k + 2 < end, HTTPBytes.isHexDigit(bytes[k + 1]), HTTPBytes.isHexDigit(bytes[k + 2]) else { return false }
                    k += 2
                }
                k += 1
            }
            if portRequired && k == host { return false }
        }
        if k == end { return !portRequired }
        guard bytes[k] == UInt8(ascii: ":") else { return false }
        k += 1
        if portRequired && k == end { return false }
        while k < end {
            guard HTTPBytes.isDigit(bytes[k]) else { return false }
            k += 1
        }
        return true
    }

    // MARK: Fields

    /// `value` is the field's value; `line` the same with the whitespace after it.
    private mutating func addField(_ bytes: UnsafeRawBufferPointer, name: Range<Int>, value: Range<Int>, line: Range<Int>,
                                   at offset: Int) throws(RequestHeadError) {
        let index = head.fields.count
        guard index < limits.maxFieldCount else { throw .tooManyFields.at(offset) }
        // One allocation for a usual head (an SDK's has about 16 fields) rather than five.
        if index == 0 { head.fields.reserveCapacity(min(limits.maxFieldCount, 24)) }
        head.fields.append(RequestHead.Field(name: name, value: value))
        // Known names by length first: most fields are compared with nothing.
        switch name.count {
        case 4:
            if HTTPBytes.tokenEquals(bytes, name, "host") {
                guard head.known.host == nil else { throw .duplicateField.at(offset) }
                // Empty is allowed: a target without an authority (RFC 9110 §7.2).
                guard value.isEmpty || Self.isAuthority(bytes, value, portRequired: false) else { throw .invalidHost.at(offset) }
                head.known.host = index
            }
        case 6:
            if HTTPBytes.tokenEquals(bytes, name, "expect") {
                guard head.known.expect == nil else { throw .duplicateField.at(offset) }
                // RFC 9110 §10.1.1: 100-continue is the only expectation defined.
                guard HTTPBytes.tokenEquals(bytes, value, "100-continue") else { throw .unsupportedExpectation.at(offset) }
                head.known.expect = index
            }
        case 7:
            // An empty Upgrade offers no protocol (RFC 9110 §7.8), and llhttp ignores it: not an
            // upgrade request (found by fuzzing; the field is dropped when forwarding anyway).
            if HTTPBytes.tokenEquals(bytes, name, "upgrade"), !value.isEmpty {
                if head.known.upgrade == nil { head.known.upgrade = index }
            }
        case 10:
            if HTTPBytes.tokenEquals(bytes, name, "connection") {
                guard !FieldValues.containsTab(bytes, line) else { throw .invalidConnection.at(offset) }
                guard let options = FieldValues.connectionOptions(bytes, value) else { throw .invalidConnection.at(offset) }
                head.connectionOptions.formUnion(options)
                if head.known.connection == nil { head.known.connection = index }
                head.known.connectionCount += 1
            }
        case 12:
            if HTTPBytes.tokenEquals(bytes, name, "x-request-id") {
                guard head.known.requestID == nil else { throw .duplicateField.at(offset) }
                head.known.requestID = index
            }
        case 13:
            if HTTPBytes.tokenEquals(bytes, name, "authorization") {
                guard head.known.authorization == nil else { throw .duplicateField.at(offset) }
                head.known.authorization = index
            } else if HTTPBytes.tokenEquals(bytes, name, "cache-control") {
                if head.known.cacheControl == nil { head.known.cacheControl = index }
                head.known.cacheControlCount += 1
            }
        case 14:
            if HTTPBytes.tokenEquals(bytes, name, "content-length") {
                guard head.known.contentLength == nil else { throw .duplicateContentLength.at(offset) }
                guard !FieldValues.containsTab(bytes, line) else { throw .invalidContentLength.at(offset) }
                guard let length = FieldValues.contentLength(bytes, value) else { throw .invalidContentLength.at(offset) }
                head.framing = .contentLength(length)
                head.known.contentLength = index
            }
        case 16:
            // Not a standard field (RFC 9112 has none by this name), but llhttp — and so the
            // gateway until now — reads it as `Connection`; so does this parser, options only
            // (the data plane drops it when forwarding).
            if HTTPBytes.tokenEquals(bytes, name, "proxy-connection") {
                guard !FieldValues.containsTab(bytes, line) else { throw .invalidConnection.at(offset) }
                guard let options = FieldValues.connectionOptions(bytes, value) else { throw .invalidConnection.at(offset) }
                head.connectionOptions.formUnion(options)
            }
        case 17:
            if HTTPBytes.tokenEquals(bytes, name, "transfer-encoding") {
                guard head.known.transferEncoding == nil else { throw .duplicateField.at(offset) }
                guard !FieldValues.containsTab(bytes, line) else { throw .unsupportedTransferCoding.at(offset) }
                // The only coding the gateway reads, once, as the only one (RFC 9112 §6.1, §7).
                guard HTTPBytes.tokenEquals(bytes, value, "chunked") else { throw .unsupportedTransferCoding.at(offset) }
                head.known.transferEncoding = index
            }
        default:
            break
        }
        if name.count > 11, HTTPBytes.tokenHasPrefix(bytes, name, "x-tollgate-") {
            head.known.tollgate.append(index)
        }
    }

    /// What follows from the fields together: framing (RFC 9112 §6.3), persistence (§9.3).
    private mutating func finish(at offset: Int) throws(RequestHeadError) {
        if requiresHost && head.version == .http11 && head.known.host == nil { throw .missingHost.at(offset) }
        if head.method == .connect && (head.known.contentLength != nil || head.known.transferEncoding != nil) {
            throw .contentWithConnect.at(offset)
        }
        if head.known.transferEncoding != nil {
            if head.known.contentLength != nil { throw .contentLengthWithTransferEncoding.at(offset) }
            if head.version == .http10 { throw .transferEncodingInHTTP10.at(offset) }
            head.framing = .chunked
        }
        let options = head.connectionOptions
        if options.contains(.close) && options.contains(.keepAlive) { throw .conflictingConnectionOptions.at(offset) }
        switch head.version {
        case .http11: head.keepAlive = !options.contains(.close)
        case .http10: head.keepAlive = options.contains(.keepAlive)
        }
        head.expectsContinue = head.known.expect != nil && head.version == .http11
    }
}
