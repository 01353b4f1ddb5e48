import TollgateCore
import XCTest

/// Feeds `input` to a fresh parser in growing prefixes ending at `cuts`, then whole.
func parseResponseHead(_ input: [UInt8], cuts: [Int] = [], limits: ResponseHeadParser.Limits = .init(),
                       answeringHEAD: Bool = false) -> Result<ResponseHead?, ResponseHeadError> {
    var parser = ResponseHeadParser(limits: limits)
    for end in cuts + [input.count] {
        let step = input.withUnsafeBytes { all in
            Result { () throws(ResponseHeadError) -> ResponseHead? in
                try parser.parse(UnsafeRawBufferPointer(rebasing: all[0..<end]), answeringHEAD: answeringHEAD)
            }
        }
        if case .success(nil) = step { continue }
        return step
    }
    return .success(nil)
}

/// The outcome for `input` whole, asserting that it is the same split at every byte boundary
/// and fed byte by byte.
func parseResponseEverySplit(_ input: [UInt8], limits: ResponseHeadParser.Limits = .init(), answeringHEAD: Bool = false,
                             file: StaticString = #filePath, line: UInt = #line) -> Result<ResponseHead?, ResponseHeadError> {
    let whole = parseResponseHead(input, limits: limits, answeringHEAD: answeringHEAD)
    for cut in 0...input.count {
        let split = parseResponseHead(input, cuts: [cut], limits: limits, answeringHEAD: answeringHEAD)
        if split != whole {
            XCTFail("split at \(cut): \(split) instead of \(whole)", file: file, line: line)
            break
        }
    }
    let byByte = parseResponseHead(input, cuts: Array(0..<input.count), limits: limits, answeringHEAD: answeringHEAD)
    XCTAssertEqual(byByte, whole, "byte by byte", file: file, line: line)
    return whole
}

final class ResponseHeadParserTests: XCTestCase {
    /// What vLLM (uvicorn) sends before a completion.
    static let vllmHead = bytes(
        "HTTP/1.1 200 OK\r\ndate: Thu, 03 Dec 2026 18:00:00 GMT\r\nserver: uvicorn\r\ncontent-length: 301\r\n"
            + "content-type: application/json\r\n\r\n")

    func testAnInstanceHeadIsReadAsRanges() {
        let input = Self.vllmHead + bytes("{\"id\":")
        guard case .success(let head?) = parseResponseEverySplit(input) else { return XCTFail("not parsed") }
        XCTAssertEqual(head.length, Self.vllmHead.count)
        XCTAssertEqual(head.version, .http11)
        XCTAssertEqual(head.status, 200)
        XCTAssertEqual(text(input, head.reason), "OK")
        XCTAssertEqual(head.fields.count, 4)
        XCTAssertEqual(text(input, head.fields[0].name), "date")
        XCTAssertEqual(text(input, head.fields[0].value), "Thu, 03 Dec 2026 18:00:00 GMT")
        XCTAssertEqual(head.known.contentLength, 2)
        XCTAssertNil(head.known.transferEncoding)
        XCTAssertNil(head.known.connection)
        XCTAssertEqual(head.contentLength, 301)
        XCTAssertEqual(head.framing, .contentLength(301))
        XCTAssertTrue(head.keepAlive)
        XCTAssertFalse(head.isInterim)
    }

    func testIncompleteHeadsWaitForMoreBytes() {
        for n in 0..<Self.vllmHead.count {
            XCTAssertEqual(parseResponseHead(Array(Self.vllmHead[0..<n])), .success(nil), "\(n) bytes")
        }
    }

    func testARefusalIsFinalUntilReset() {
        var parser = ResponseHeadParser()
        let bad = bytes("HTTP/1.1 200 OK\nx: y\r\n\r\n")
        func parse(_ input: [UInt8]) -> Result<ResponseHead?, ResponseHeadError> {
            input.withUnsafeBytes { all in Result { () throws(ResponseHeadError) -> ResponseHead? in try parser.parse(all) } }
        }
        XCTAssertEqual(parse(bad), .failure(.bareLineFeed))
        XCTAssertEqual(parse(Self.vllmHead), .failure(.bareLineFeed), "still refused")
        parser.reset()
        guard case .success(_?) = parse(Self.vllmHead) else { return XCTFail("not parsed after reset") }
    }

    func testFramingFollowsRFC9112Section6_3() {
        func framing(_ s: String, head: Bool = false) -> ResponseHead.Framing? {
            guard case .success(let h?) = parseResponseEverySplit(bytes(s), answeringHEAD: head) else { return nil }
            return h.framing
        }
        XCTAssertEqual(framing("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), .contentLength(0))
        XCTAssertEqual(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), .chunked)
        XCTAssertEqual(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n"), .chunked)
        XCTAssertEqual(framing("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n"), .untilClose)
        XCTAssertEqual(framing("HTTP/1.0 200 OK\r\n\r\n"), .untilClose)
        // No body, whatever the fields say: HEAD, 1xx, 204, 304.
        XCTAssertEqual(framing("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", head: true), ResponseHead.Framing.none)
        XCTAssertEqual(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", head: true), ResponseHead.Framing.none)
        XCTAssertEqual(framing("HTTP/1.1 200 OK\r\n\r\n", head: true), ResponseHead.Framing.none)
        XCTAssertEqual(framing("HTTP/1.1 204 No Content\r\n\r\n"), ResponseHead.Framing.none)
        XCTAssertEqual(framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n"), ResponseHead.Framing.none)
        XCTAssertEqual(framing("HTTP/1.1 100 Continue\r\n\r\n"), ResponseHead.Framing.none)
        XCTAssertEqual(framing("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"), ResponseHead.Framing.none)
        // The HEAD answer keeps the length the GET would have had.
        guard case .success(let h?) = parseResponseHead(bytes("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"), answeringHEAD: true)
        else { return XCTFail() }
        XCTAssertEqual(h.contentLength, 12)
    }

    func testKeepAliveFollowsRFC9112Section9_3() {
        func keepAlive(_ s: String) -> Bool? {
            guard case .success(let h?) = parseResponseEverySplit(bytes(s)) else { return nil }
            return h.keepAlive
        }
        XCTAssertEqual(keepAlive("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), true)
        XCTAssertEqual(keepAlive("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), false)
        XCTAssertEqual(keepAlive("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: x-a, Close\r\n\r\n"), false)
        XCTAssertEqual(keepAlive("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nProxy-Connection: close\r\n\r\n"), false)
        XCTAssertEqual(keepAlive("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"), false)
        XCTAssertEqual(keepAlive("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"), true)
        // Until close never keeps the connection, whatever it says.
        XCTAssertEqual(keepAlive("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n"), false)
        XCTAssertEqual(keepAlive("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n"), false)
    }

    func testInterimAnswersAreMarked() {
        guard case .success(let h?) = parseResponseEverySplit(bytes("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")) else {
            return XCTFail()
        }
        XCTAssertTrue(h.isInterim)
        XCTAssertEqual(h.length, 25)
        guard case .success(let s?) = parseResponseHead(bytes("HTTP/1.1 101 Switching Protocols\r\n\r\n")) else { return XCTFail() }
        XCTAssertFalse(s.isInterim)
        XCTAssertEqual(s.status, 101)
    }

    func testWhatStrictnessStillAccepts() {
        func head(_ s: String) -> (ResponseHead, [UInt8])? {
            let input = bytes(s)
            guard case .success(let h?) = parseResponseEverySplit(input) else { XCTFail(s); return nil }
            return (h, input)
        }
        // No reason phrase, with or without its space (llhttp accepts both).
        if let (h, input) = head("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n") {
            XCTAssertEqual(h.status, 200)
            XCTAssertEqual(text(input, h.reason), "")
        }
        if let (h, _) = head("HTTP/1.1 599\r\nContent-Length: 0\r\n\r\n") { XCTAssertEqual(h.status, 599) }
        // A reason with spaces, tabs and obs-text.
        if let (h, input) = head("HTTP/1.1 404 Not\tFound \u{e9}\r\n\r\n") { XCTAssertEqual(text(input, h.reason), "Not\tFound \u{e9}") }
        // Whitespace around values is not part of them; empty values; obs-text in values.
        if let (h, input) = head("HTTP/1.1 200 OK\r\nA:  b c \r\nE:\r\nF: \u{e9}\r\nContent-Length: 0\r\n\r\n") {
            XCTAssertEqual(text(input, h.fields[0].value), "b c")
            XCTAssertEqual(text(input, h.fields[1].value), "")
            XCTAssertEqual(text(input, h.fields[2].value), "\u{e9}")
        }
        // Connection lists, empty elements; the names it lists.
        if let (h, input) = head("HTTP/1.1 200 OK\r\nConnection: , X-Hop ,keep-alive\r\nX-Hop: 1\r\nX-Other: 2\r\nConnection: x-b\r\nContent-Length: 0\r\n\r\n") {
            XCTAssertEqual(h.connectionOptions, [.keepAlive, .other])
            XCTAssertEqual(h.known.connection, 0)
            XCTAssertEqual(h.known.connectionCount, 2)
            input.withUnsafeBytes { all in
                XCTAssertTrue(h.isListedInConnection(h.fields[1].name, in: all))
                XCTAssertFalse(h.isListedInConnection(h.fields[2].name, in: all))
                XCTAssertTrue(h.isListedInConnection(h.fields[3].value.lowerBound..<h.fields[3].value.upperBound, in: all))
            }
        }
        // A name listed in Connection is compared without case, and only whole.
        if let (h, input) = head("HTTP/1.1 200 OK\r\nConnection: x-hop\r\nX-HOP: 1\r\nX-Hops: 2\r\nContent-Length: 0\r\n\r\n") {
            input.withUnsafeBytes { all in
                XCTAssertTrue(h.isListedInConnection(h.fields[1].name, in: all))
                XCTAssertFalse(h.isListedInConnection(h.fields[2].name, in: all))
            }
        }
        if let (h, _) = head("HTTP/1.1 200 OK\r\nContent-Length: 0000123\r\n\r\n") { XCTAssertEqual(h.framing, .contentLength(123)) }
        if let (h, _) = head("HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\n") {
            XCTAssertEqual(h.framing, .contentLength(Int.max))
        }
    }

    func testEachAmbiguityIsRefusedWithItsReason() {
        let cases: [(String, ResponseHeadError)] = [
            // Line endings.
            ("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", .bareLineFeed),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n", .bareLineFeed),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n", .bareLineFeed),
            ("HTTP/1.1 200\n\r\n", .bareLineFeed),
            ("HTTP/1.1 200 OK\rX: y\r\n\r\n", .bareCarriageReturn),
            ("HTTP/1.1 200 OK\r\nX: y\rZ\r\n\r\n", .bareCarriageReturn),
            ("HTTP/1.1 200 OK\r\n\rX", .bareCarriageReturn),
            // Status line.
            ("\r\nHTTP/1.1 200 OK\r\n\r\n", .invalidVersion),
            ("http/1.1 200 OK\r\n\r\n", .invalidVersion),
            ("HTTP/1.1  200 OK\r\n\r\n", .invalidStatus),
            ("HTTP/1.1\t200 OK\r\n\r\n", .invalidVersion),
            ("HTTP/2.0 200 OK\r\n\r\n", .unsupportedVersion),
            ("HTTP/1.2 200 OK\r\n\r\n", .unsupportedVersion),
            ("HTTP/1.x 200 OK\r\n\r\n", .invalidVersion),
            ("HTTP/1.1 20 OK\r\n\r\n", .invalidStatus),
            ("HTTP/1.1 2000 OK\r\n\r\n", .invalidStatus),
            ("HTTP/1.1 099 OK\r\n\r\n", .invalidStatus),
            ("HTTP/1.1 600 OK\r\n\r\n", .invalidStatus),
            ("HTTP/1.1 2x0 OK\r\n\r\n", .invalidStatus),
            ("HTTP/1.1 200\tOK\r\n\r\n", .invalidStatus),
            ("HTTP/1.1 200 O\u{0}K\r\n\r\n", .invalidReason),
            ("HTTP/1.1 200 O\u{7f}K\r\n\r\n", .invalidReason),
            ("HTTP/1.1 200 O\u{1b}K\r\n\r\n", .invalidReason),
            // Field lines.
            ("HTTP/1.1 200 OK\r\n X: y\r\n\r\n", .obsoleteLineFolding),
            ("HTTP/1.1 200 OK\r\nX: y\r\n  z\r\n\r\n", .obsoleteLineFolding),
            ("HTTP/1.1 200 OK\r\nX: y\r\n\tz\r\n\r\n", .obsoleteLineFolding),
            ("HTTP/1.1 200 OK\r\nX : y\r\n\r\n", .whitespaceBeforeColon),
            ("HTTP/1.1 200 OK\r\nX\t: y\r\n\r\n", .whitespaceBeforeColon),
            ("HTTP/1.1 200 OK\r\nX y\r\n\r\n", .whitespaceBeforeColon),
            ("HTTP/1.1 200 OK\r\nXy\r\n\r\n", .fieldWithoutColon),
            ("HTTP/1.1 200 OK\r\n: y\r\n\r\n", .invalidFieldName),
            ("HTTP/1.1 200 OK\r\nX(y): z\r\n\r\n", .invalidFieldName),
            ("HTTP/1.1 200 OK\r\nX\u{0}: z\r\n\r\n", .invalidFieldName),
            ("HTTP/1.1 200 OK\r\nX: a\u{0}b\r\n\r\n", .invalidFieldValue),
            ("HTTP/1.1 200 OK\r\nX: a\u{1}b\r\n\r\n", .invalidFieldValue),
            ("HTTP/1.1 200 OK\r\nX: a\u{7f}\r\n\r\n", .invalidFieldValue),
            // Framing.
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", .contentLengthWithTransferEncoding),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", .contentLengthWithTransferEncoding),
            ("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", .contentLengthWithTransferEncoding),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", .duplicateContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", .duplicateContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n", .invalidContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", .invalidContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", .invalidContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", .invalidContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", .invalidContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n", .invalidContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\t\r\n\r\n", .invalidContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\n", .invalidContentLength),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", .unsupportedTransferCoding),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", .unsupportedTransferCoding),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", .unsupportedTransferCoding),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", .unsupportedTransferCoding),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n", .unsupportedTransferCoding),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", .duplicateTransferEncoding),
            ("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", .transferEncodingInHTTP10),
            ("HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n", .framingInInformational),
            ("HTTP/1.1 150 X\r\nContent-Length: 5\r\n\r\nhello", .framingInInformational),
            ("HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\n", .framingInInformational),
            // Connection.
            ("HTTP/1.1 200 OK\r\nConnection: close x\r\n\r\n", .invalidConnection),
            ("HTTP/1.1 200 OK\r\nConnection: close\t\r\n\r\n", .invalidConnection),
            ("HTTP/1.1 200 OK\r\nConnection: a;b\r\n\r\n", .invalidConnection),
            ("HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n", .conflictingConnectionOptions),
        ]
        for (s, error) in cases {
            XCTAssertEqual(parseResponseEverySplit(bytes(s)), .failure(error), s.debugDescription)
        }
    }

    func testTheHeadSizeLimitHoldsWhereverTheBytesAreSplit() {
        let limits = ResponseHeadParser.Limits(maxHeadBytes: 64, maxFieldCount: 10)
        let fits = bytes("HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: 40) + "\r\n\r\n")
        XCTAssertEqual(fits.count, 64)
        guard case .success(_?) = parseResponseEverySplit(fits, limits: limits) else { return XCTFail("refused") }
        let over = bytes("HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: 41) + "\r\n\r\n")
        XCTAssertEqual(parseResponseEverySplit(over, limits: limits), .failure(.headTooLarge))
        // An endless head is refused once the limit is reached, before it ends.
        XCTAssertEqual(parseResponseHead(Array(over[0..<64]), limits: limits), .failure(.headTooLarge))
        // The default: 64 KiB.
        let huge = bytes("HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: 70_000))
        XCTAssertEqual(parseResponseHead(huge), .failure(.headTooLarge))
    }

    func testTheFieldCountLimit() {
        let limits = ResponseHeadParser.Limits(maxHeadBytes: 4096, maxFieldCount: 3)
        XCTAssertNotEqual(parseResponseEverySplit(bytes("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), limits: limits),
                          .failure(.tooManyFields))
        XCTAssertEqual(parseResponseEverySplit(bytes("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n"), limits: limits),
                       .failure(.tooManyFields))
    }
}
