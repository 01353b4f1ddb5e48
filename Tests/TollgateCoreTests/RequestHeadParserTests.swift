import TollgateCore
import XCTest

/// Feeds `input` to a fresh parser in growing prefixes ending at `cuts`, then whole, as a
/// connection's buffer grows read by read. nil: the head is not complete.
func parseHead(_ input: [UInt8], cuts: [Int] = [], limits: RequestHeadParser.Limits = .init(),
               requiresHost: Bool = true) -> Result<RequestHead?, RequestHeadError> {
    var parser = RequestHeadParser(limits: limits, requiresHost: requiresHost)
    for end in cuts + [input.count] {
        let step = input.withUnsafeBytes { all in
            Result { () throws(RequestHeadError) -> RequestHead? in try parser.parse(UnsafeRawBufferPointer(rebasing: all[0..<end])) }
        }
        if case .success(nil) = step { continue }
        return step
    }
    return .success(nil)
}

/// The outcome for `input` whole, asserting that it is the same split at every byte boundary
/// and fed byte by byte.
func parseEverySplit(_ input: [UInt8], limits: RequestHeadParser.Limits = .init(), requiresHost: Bool = true,
                     file: StaticString = #filePath, line: UInt = #line) -> Result<RequestHead?, RequestHeadError> {
    let whole = parseHead(input, limits: limits, requiresHost: requiresHost)
    for cut in 0...input.count {
        let split = parseHead(input, cuts: [cut], limits: limits, requiresHost: requiresHost)
        if split != whole {
            XCTFail("split at \(cut): \(split) instead of \(whole)", file: file, line: line)
            break
        }
    }
    let byByte = parseHead(input, cuts: Array(0..<input.count), limits: limits, requiresHost: requiresHost)
    XCTAssertEqual(byByte, whole, "byte by byte", file: file, line: line)
    return whole
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

func text(_ input: [UInt8], _ range: Range<Int>) -> String { String(decoding: input[range], as: UTF8.self) }

final class RequestHeadParserTests: XCTestCase {
    /// What the OpenAI Python SDK sends (httpx), with a gateway key.
    static let sdkHead = bytes(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: gzip, deflate\r\n"
            + "Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
            + "User-Agent: OpenAI/Python 1.54.4\r\nX-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.54.4\r\n"
            + "X-Stainless-OS: Linux\r\nX-Stainless-Arch: x64\r\nX-Stainless-Runtime: CPython\r\n"
            + "X-Stainless-Runtime-Version: 3.12.3\r\nAuthorization: Bearer tg-eng-0123456789abcdef\r\n"
            + "x-stainless-retry-count: 0\r\nx-stainless-read-timeout: 600\r\nContent-Length: 93\r\n\r\n")

    func testAnSDKHeadIsReadAsRanges() throws {
        let input = Self.sdkHead + bytes("{\"model\":\"qwen\"}")
        guard case .success(let head?) = parseEverySplit(input) else { return XCTFail("not parsed") }
        XCTAssertEqual(head.length, Self.sdkHead.count)
        XCTAssertEqual(head.method, .post)
        XCTAssertEqual(text(input, head.methodRange), "POST")
        XCTAssertEqual(text(input, head.target), "/v1/chat/completions")
        XCTAssertEqual(text(input, head.path), "/v1/chat/completions")
        XCTAssertNil(head.query)
        XCTAssertEqual(head.version, .http11)
        XCTAssertEqual(head.fields.count, 16)
        XCTAssertEqual(text(input, head.fields[0].name), "Host")
        XCTAssertEqual(text(input, head.fields[0].value), "127.0.0.1:8080")
        XCTAssertEqual(head.known.host, 0)
        XCTAssertEqual(head.known.connection, 2)
        XCTAssertEqual(head.known.connectionCount, 1)
        XCTAssertEqual(head.known.authorization, 12)
        XCTAssertEqual(text(input, head.fields[12].value), "Bearer tg-eng-0123456789abcdef")
        XCTAssertEqual(head.known.contentLength, 15)
        XCTAssertNil(head.known.transferEncoding)
        XCTAssertNil(head.known.expect)
        XCTAssertNil(head.known.requestID)
        XCTAssertEqual(head.framing, .contentLength(93))
        XCTAssertEqual(head.connectionOptions, [.keepAlive])
        XCTAssertTrue(head.keepAlive)
        XCTAssertFalse(head.expectsContinue)
        XCTAssertFalse(head.switchesProtocol)
        input.withUnsafeBytes { all in
            XCTAssertTrue(head.fieldName(12, in: all, is: "authorization"))
            XCTAssertEqual(Array(head.value(15, in: all)), bytes("93"))
        }
    }

    func testIncompleteHeadsWaitForMoreBytes() {
        for cut in 0..<Self.sdkHead.count {
            XCTAssertEqual(parseHead(Array(Self.sdkHead[0..<cut])), .success(nil), "cut at \(cut)")
        }
    }

    func testAParserStartsOverAfterEachHeadForPipelinedRequests() throws {
        let first = bytes("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        let second = bytes("HEAD /v1/models HTTP/1.1\r\nHost: y\r\nConnection: close\r\n\r\n")
        let input = first + second
        var parser = RequestHeadParser()
        let one = try input.withUnsafeBytes { try parser.parse($0) }
        XCTAssertEqual(one?.length, first.count)
        XCTAssertEqual(one?.method, .get)
        let two = try input.withUnsafeBytes { try parser.parse(UnsafeRawBufferPointer(rebasing: $0[first.count...])) }
        XCTAssertEqual(two?.method, .head)
        XCTAssertEqual(two?.length, second.count)
        XCTAssertEqual(two?.keepAlive, false)
    }

    func testARefusalIsFinalUntilReset() throws {
        var parser = RequestHeadParser()
        let bad = bytes("GET / HTTP/1.1\nHost: x\r\n\r\n")
        let good = bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertThrowsError(try bad.withUnsafeBytes { try parser.parse($0) })
        XCTAssertThrowsError(try good.withUnsafeBytes { try parser.parse($0) }) { error in
            XCTAssertEqual(error as? RequestHeadError, .bareLineFeed)
        }
        parser.reset()
        XCTAssertEqual(try good.withUnsafeBytes { try parser.parse($0) }?.length, good.count)
    }

    func testEachAmbiguityIsRefusedWithItsReason() {
        let h = "GET / HTTP/1.1\r\nHost: x\r\n"
        let cases: [(String, RequestHeadError)] = [
            // Line endings (RFC 9112 §2.2).
            ("GET / HTTP/1.1\nHost: x\r\n\r\n", .bareLineFeed),
            (h + "X: y\n\r\n", .bareLineFeed),
            (h + "\n", .bareLineFeed),
            ("\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", .bareLineFeed),
            ("GET / HTTP/1.1\rHost: x\r\n\r\n", .bareCarriageReturn),
            (h + "X: a\rb\r\n\r\n", .bareCarriageReturn),
            (h + "\rX", .bareCarriageReturn),
            ("\rGET / HTTP/1.1\r\nHost: x\r\n\r\n", .bareCarriageReturn),
            // The request line (RFC 9112 §3).
            ("G@T / HTTP/1.1\r\nHost: x\r\n\r\n", .invalidMethod),
            (" GET / HTTP/1.1\r\nHost: x\r\n\r\n", .invalidMethod),
            ("GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", .invalidMethod),
            ("get / HTTP/1.1\r\nHost: x\r\n\r\n", .unsupportedMethod),
            ("PROPFIND / HTTP/1.1\r\nHost: x\r\n\r\n", .unsupportedMethod),
            ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", .unsupportedMethod),
            ("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", .invalidVersion),  // the space ended the target
            ("GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET /a\u{7F} HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET /caf\u{E9} HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET /a\u{0}b HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET /%4 HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET /{a} HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET * HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("OPTIONS *x HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET x HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET ftp://example.com/ HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET http://user@example.com/ HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("CONNECT /a HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("CONNECT example.com HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("CONNECT example.com: HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET /\r\n\r\n", .invalidVersion),
            ("GET / http/1.1\r\nHost: x\r\n\r\n", .invalidVersion),
            ("GET / HTTP/1.10\r\nHost: x\r\n\r\n", .invalidVersion),
            ("GET / HTTP/1\r\nHost: x\r\n\r\n", .invalidVersion),
            ("GET / HTTP/1.1 \r\nHost: x\r\n\r\n", .invalidTarget),
            ("GET / HTTP/1.2\r\nHost: x\r\n\r\n", .unsupportedVersion),
            ("GET / HTTP/2.0\r\nHost: x\r\n\r\n", .unsupportedVersion),
            ("GET / HTTP/0.9\r\nHost: x\r\n\r\n", .unsupportedVersion),
            ("GET / HTTP/1.3\r\nHost: x\r\n\r\n", .unsupportedVersion),
            ("GET / RTSP/1.0\r\nHost: x\r\n\r\n", .invalidVersion),
            // Field lines (RFC 9112 §5, RFC 9110 §5).
            (h + "X : y\r\n\r\n", .whitespaceBeforeColon),
            (h + "X\t: y\r\n\r\n", .whitespaceBeforeColon),
            (h + "X: y\r\n folded\r\n\r\n", .obsoleteLineFolding),
            (h + "X: y\r\n\tfolded\r\n\r\n", .obsoleteLineFolding),
            ("GET / HTTP/1.1\r\n Host: x\r\n\r\n", .obsoleteLineFolding),
            (h + ": y\r\n\r\n", .invalidFieldName),
            (h + "X(: y\r\n\r\n", .invalidFieldName),
            (h + "X\u{0}: y\r\n\r\n", .invalidFieldName),
            (h + "caf\u{E9}: y\r\n\r\n", .invalidFieldName),
            (h + "NoColon\r\n\r\n", .fieldWithoutColon),
            (h + "X: a\u{0}b\r\n\r\n", .invalidFieldValue),
            (h + "X: a\u{1}b\r\n\r\n", .invalidFieldValue),
            (h + "X: a\u{7F}\r\n\r\n", .invalidFieldValue),
            (h + "X: a\u{C}b\r\n\r\n", .invalidFieldValue),
            // Framing (RFC 9112 §6).
            (h + "Content-Length: 1\r\nContent-Length: 1\r\n\r\n", .duplicateContentLength),
            (h + "Content-Length: 1\r\ncontent-length: 2\r\n\r\n", .duplicateContentLength),
            (h + "Content-Length: 1, 1\r\n\r\n", .invalidContentLength),
            (h + "Content-Length: -1\r\n\r\n", .invalidContentLength),
            (h + "Content-Length: +1\r\n\r\n", .invalidContentLength),
            (h + "Content-Length: 0x10\r\n\r\n", .invalidContentLength),
            (h + "Content-Length: 1 2\r\n\r\n", .invalidContentLength),
            (h + "Content-Length:\r\n\r\n", .invalidContentLength),
            (h + "Content-Length: 9223372036854775808\r\n\r\n", .invalidContentLength),
            (h + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", .contentLengthWithTransferEncoding),
            (h + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", .contentLengthWithTransferEncoding),
            (h + "Transfer-Encoding: gzip, chunked\r\n\r\n", .unsupportedTransferCoding),
            (h + "Transfer-Encoding: chunked, chunked\r\n\r\n", .unsupportedTransferCoding),
            (h + "Transfer-Encoding: identity\r\n\r\n", .unsupportedTransferCoding),
            (h + "Transfer-Encoding: chunked;q=1\r\n\r\n", .unsupportedTransferCoding),
            (h + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", .duplicateField),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .transferEncodingInHTTP10),
            // Fields read once.
            ("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", .missingHost),
            (h + "Host: y\r\n\r\n", .duplicateField),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", .invalidHost),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", .invalidHost),
            ("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", .invalidHost),
            ("GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", .invalidHost),
            (h + "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n", .duplicateField),
            (h + "X-Request-Id: a\r\nx-request-id: b\r\n\r\n", .duplicateField),
            (h + "Expect: 100-continue\r\nExpect: 100-continue\r\n\r\n", .duplicateField),
            (h + "Expect: 200-ok\r\n\r\n", .unsupportedExpectation),
            (h + "Connection: close, keep-alive\r\n\r\n", .conflictingConnectionOptions),
            (h + "Connection: close\r\nConnection: keep-alive\r\n\r\n", .conflictingConnectionOptions),
            (h + "Connection: close x\r\n\r\n", .invalidConnection),
            (h + "Connection: \"close\"\r\n\r\n", .invalidConnection),
            // HTAB where llhttp 9.3 reads these values another way.
            (h + "Connection: close\t\r\n\r\n", .invalidConnection),
            (h + "Connection: close,\tupgrade\r\n\r\n", .invalidConnection),
            (h + "Proxy-Connection: close \t\r\n\r\n", .invalidConnection),
            (h + "Content-Length: 5\t\r\n\r\n", .invalidContentLength),
            (h + "Transfer-Encoding: chunked\t\r\n\r\n", .unsupportedTransferCoding),
            (h + "Proxy-Connection: close, keep-alive\r\n\r\n", .conflictingConnectionOptions),
            ("CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\nContent-Length: 0\r\n\r\n", .contentWithConnect),
            ("CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\nTransfer-Encoding: chunked\r\n\r\n", .contentWithConnect),
        ]
        for (input, expected) in cases {
            XCTAssertEqual(parseEverySplit(bytes(input)), .failure(expected), input.debugDescription)
        }
    }

    func testWhatStrictnessStillAccepts() throws {
        func head(_ s: String) -> (RequestHead, [UInt8])? {
            let input = bytes(s)
            guard case .success(let head?) = parseEverySplit(input) else {
                XCTFail("refused: \(s.debugDescription) \(parseHead(input))")
                return nil
            }
            return (head, input)
        }
        // Empty lines before the request line are skipped (RFC 9112 §2.2) and counted in the head.
        if case let (h, input)? = head("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n") {
            XCTAssertEqual(h.methodRange, 4..<7)
            XCTAssertEqual(h.length, input.count)
        }
        // Whitespace around a value is not part of it; inside it is; an empty value is a value;
        // obs-text (a UTF-8 name in a value) is allowed (RFC 9110 §5.5).
        if case let (h, input)? = head("GET / HTTP/1.1\r\nHost: x\r\nX:  \t a \t b \t \r\nY:\r\nZ: caf\u{E9}\r\n\r\n") {
            XCTAssertEqual(text(input, h.fields[1].value), "a \t b")
            XCTAssertEqual(h.fields[2].value.count, 0)
            XCTAssertEqual(text(input, h.fields[3].value), "caf\u{E9}")
        }
        // HTTP/1.0: no Host needed, closes unless keep-alive, ignores 100-continue (RFC 9110 §10.1.1).
        if case let (h, _)? = head("GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n") {
            XCTAssertEqual(h.version, .http10)
            XCTAssertFalse(h.keepAlive)
            XCTAssertFalse(h.expectsContinue)
        }
        if case let (h, _)? = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") { XCTAssertTrue(h.keepAlive) }
        if case let (h, _)? = head("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") { XCTAssertFalse(h.keepAlive) }
        if case let (h, _)? = head("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 0003\r\n\r\n") {
            XCTAssertTrue(h.expectsContinue)
            XCTAssertEqual(h.framing, .contentLength(3))
        }
        if case let (h, _)? = head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\t Chunked \r\n\r\n") {
            XCTAssertEqual(h.framing, .chunked)
        }
        if case let (h, _)? = head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\t7 \r\n\r\n") {
            XCTAssertEqual(h.framing, .contentLength(7))
        }
        // Proxy-Connection counts as Connection, as it did in NIO's llhttp.
        if case let (h, _)? = head("GET / HTTP/1.1\r\nHost: x\r\nProxy-Connection: close\r\n\r\n") {
            XCTAssertFalse(h.keepAlive)
            XCTAssertNil(h.known.connection)
        }
        // Connection lists: empty elements, any case, several fields, other names (RFC 9110 §7.6.1).
        if case let (h, _)? = head("GET / HTTP/1.1\r\nHost: x\r\nConnection: , Upgrade ,,HTTP2-Settings\r\nUpgrade: h2c\r\nconnection: KEEP-ALIVE\r\n\r\n") {
            XCTAssertEqual(h.connectionOptions, [.upgrade, .other, .keepAlive])
            XCTAssertEqual(h.known.connectionCount, 2)
            XCTAssertTrue(h.upgrade)
            XCTAssertTrue(h.switchesProtocol)
        }
        // An empty Upgrade offers nothing: no upgrade, as llhttp reads it (found by fuzzing).
        if case let (h, _)? = head("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: \r\n\r\n") {
            XCTAssertFalse(h.upgrade)
            XCTAssertFalse(h.switchesProtocol)
            XCTAssertEqual(h.connectionOptions, [.upgrade])
        }
        // Target forms (RFC 9112 §3.2).
        if case let (h, input)? = head("GET /v1/usage?from=2026-11-01&to=%7E HTTP/1.1\r\nHost: x\r\n\r\n") {
            XCTAssertEqual(text(input, h.path), "/v1/usage")
            XCTAssertEqual(h.query.map { text(input, $0) }, "from=2026-11-01&to=%7E")
        }
        if case let (h, input)? = head("GET HTTP://Example.com:8080/v1/models?x HTTP/1.1\r\nHost: x\r\n\r\n") {
            XCTAssertEqual(text(input, h.path), "/v1/models")
            XCTAssertEqual(h.query.map { text(input, $0) }, "x")
        }
        if case let (h, _)? = head("GET https://[::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n") { XCTAssertTrue(h.path.isEmpty) }
        if case let (h, _)? = head("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n") { XCTAssertEqual(h.method, .options) }
        if case let (h, _)? = head("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n") {
            XCTAssertEqual(h.method, .connect)
            XCTAssertTrue(h.switchesProtocol)
        }
        // An empty Host: a target without authority (RFC 9110 §7.2).
        if case let (h, _)? = head("GET / HTTP/1.1\r\nHost:\r\n\r\n") { XCTAssertEqual(h.known.host, 0) }
        // The gateway's own options and the request id.
        if case let (h, _)? = head("GET / HTTP/1.1\r\nX-Tollgate-Lane: batch\r\nHost: x\r\nx-tollgate-: no\r\nX-Request-Id: r1\r\nx-tollgate-priority: 2\r\n\r\n") {
            XCTAssertEqual(h.known.tollgate, [0, 4])
            XCTAssertEqual(h.known.requestID, 3)
        }
        for method in RequestHead.Method.allCases where method != .connect {
            if case let (h, _)? = head("\(method.name) / HTTP/1.1\r\nHost: x\r\n\r\n") { XCTAssertEqual(h.method, method) }
        }
    }

    func testAWrongVersionIsRefusedBeforeItsLineEnds() {
        XCTAssertEqual(parseHead(bytes("GET / HTTP/5")), .failure(.unsupportedVersion))
        XCTAssertEqual(parseHead(bytes("GET / HTTX")), .failure(.invalidVersion))
        XCTAssertEqual(parseHead(bytes("GET / HTTP/1.1x")), .failure(.invalidVersion))
        XCTAssertEqual(parseHead(bytes("GET / HTTP/1.1")), .success(nil))
    }

    func testHostIsRequiredUnlessSwitchedOff() {
        let input = bytes("GET / HTTP/1.1\r\n\r\n")
        XCTAssertEqual(parseEverySplit(input), .failure(.missingHost))
        XCTAssertEqual(try parseEverySplit(input, requiresHost: false).get()?.length, input.count)
    }

    func testTheHeadSizeLimitHoldsWhereverTheBytesAreSplit() {
        let input = Self.sdkHead
        let exact = RequestHeadParser.Limits(maxHeadBytes: input.count)
        XCTAssertEqual(try parseEverySplit(input, limits: exact).get()?.length, input.count)
        let under = RequestHeadParser.Limits(maxHeadBytes: input.count - 1)
        XCTAssertEqual(parseEverySplit(input, limits: under), .failure(.headTooLarge))
        // Refused as soon as the limit is passed, not when the head ends.
        XCTAssertEqual(parseHead(Array(input[0..<(input.count - 1)]), limits: under), .failure(.headTooLarge))
        XCTAssertEqual(parseHead(Array(input[0..<(input.count - 2)]), limits: under), .success(nil))
        // Empty lines before the head count too: they cannot be sent for ever.
        let blank = [UInt8](repeating: 0, count: 64).flatMap { _ in bytes("\r\n") }
        XCTAssertEqual(parseHead(blank, limits: .init(maxHeadBytes: 100)), .failure(.headTooLarge))
    }

    func testTheFieldCountLimit() {
        let input = bytes("GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n")
        XCTAssertEqual(try parseEverySplit(input, limits: .init(maxFieldCount: 3)).get()?.fields.count, 3)
        XCTAssertEqual(parseEverySplit(input, limits: .init(maxFieldCount: 2)), .failure(.tooManyFields))
    }

    func testTheRequestLineLimitRefusesBeforeTheLineEnds() {
        let line = "GET /" + String(repeating: "a", count: 95) + " HTTP/1.1"  // 109 bytes
        let input = bytes(line + "\r\nHost: x\r\n\r\n")
        XCTAssertNotNil(try parseEverySplit(input, limits: .init(maxRequestLineBytes: 109)).get())
        XCTAssertEqual(parseEverySplit(input, limits: .init(maxRequestLineBytes: 108)), .failure(.requestLineTooLong))
        XCTAssertEqual(parseHead(Array(input[0..<109]), limits: .init(maxRequestLineBytes: 108)), .failure(.requestLineTooLong))
        XCTAssertEqual(parseHead(Array(input[0..<108]), limits: .init(maxRequestLineBytes: 108)), .success(nil))
        // A long method or target too, not only a long version.
        let long = bytes(String(repeating: "G", count: 200))
        XCTAssertEqual(parseHead(long, limits: .init(maxRequestLineBytes: 100)), .failure(.requestLineTooLong))
    }

    func testLimitsComeFromTheConfiguration() {
        var limits = RequestLimits()
        limits.maxHeaderBytes = 4096
        limits.maxHeaderCount = 7
        let parser = RequestHeadParser.Limits(limits)
        XCTAssertEqual(parser, .init(maxHeadBytes: 4096, maxFieldCount: 7, maxRequestLineBytes: 4096))
        XCTAssertEqual(RequestHeadParser.Limits(RequestLimits()).maxRequestLineBytes, 8192)
    }
}
