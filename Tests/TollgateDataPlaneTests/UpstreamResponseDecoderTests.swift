import NIOCore
import NIOEmbedded
import TollgateCore
import XCTest

@testable import TollgateDataPlane

/// The upstream side's answer decoder, from the attacker's side (an instance is outside the
/// gateway): the parts it hands on however the bytes are split, what it refuses, and — through
/// `UpstreamHandler` on an `EmbeddedChannel` — that a connection with bytes nobody asked for is
/// closed and never reused.
final class UpstreamResponseDecoderTests: XCTestCase {
    /// What came out, flattened.
    struct Decoded: Equatable {
        var statuses: [Int] = []
        var body = ""
        var ends = 0
        /// Bytes left after the end (past the answer).
        var leftover = 0
        var error: String?
    }

    /// Feeds `chunks` to a decoder expecting one answer, as reads arriving one after another;
    /// `closed`: the connection closes after the last one.
    func decode(_ chunks: [[UInt8]], toHEAD: Bool = false, closed: Bool = false) -> Decoded {
        var decoder = UpstreamResponseDecoder(limits: .init(maxHeadBytes: 1024, maxFieldCount: 16))
        decoder.expectAnswer(toHEAD: toHEAD)
        var buffer = ByteBuffer()
        var out = Decoded()
        func take(_ part: UpstreamPart) {
            switch part {
            case .head(let h):
                out.statuses.append(h.status)
                XCTAssertEqual(h.bytes.readableBytes, h.head.length, "the head's bytes are its own")
            case .body(let b):
                XCTAssertGreaterThan(b.readableBytes, 0, "no empty body part")
                out.body += String(buffer: b)
            case .end: out.ends += 1
            }
        }
        for chunk in chunks {
            buffer.writeBytes(chunk)
            if out.ends > 0 { continue }  // past the end: left over
            do {
                while out.ends == 0, let part = try decoder.next(&buffer) { take(part) }
            } catch {
                out.error = error.description
                return out
            }
        }
        if closed, out.ends == 0, let end = decoder.endAtClose() { take(end) }
        out.leftover = buffer.readableBytes
        return out
    }

    /// The outcome for `input` whole, asserting it is the same split at every byte and byte by byte.
    func decodeEverySplit(_ input: String, toHEAD: Bool = false, closed: Bool = false,
                          file: StaticString = #filePath, line: UInt = #line) -> Decoded {
        let bytes = Array(input.utf8)
        let whole = decode([bytes], toHEAD: toHEAD, closed: closed)
        for cut in 0...bytes.count {
            let split = decode([Array(bytes[..<cut]), Array(bytes[cut...])], toHEAD: toHEAD, closed: closed)
            if split != whole {
                XCTFail("split at \(cut): \(split) instead of \(whole)", file: file, line: line)
                break
            }
        }
        XCTAssertEqual(decode(bytes.map { [$0] }, toHEAD: toHEAD, closed: closed), whole, "byte by byte", file: file, line: line)
        return whole
    }

    func testContentLengthBodiesStopAtTheirLength() {
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"),
                       Decoded(statuses: [200], body: "hello world", ends: 1))
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), Decoded(statuses: [200], ends: 1))
        // Bytes past the length are not the body's: left for the handler to refuse.
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n\r\n"),
                       Decoded(statuses: [200], body: "hello", ends: 1, leftover: 19))
        // Closed before the length: no end.
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello", closed: true),
                       Decoded(statuses: [200], body: "hello"))
    }

    func testChunkedBodiesAreDecodedAndTrailersDropped() {
        let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=\"y\"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        XCTAssertEqual(decodeEverySplit(answer), Decoded(statuses: [200], body: "hello world", ends: 1))
        XCTAssertEqual(decodeEverySplit(answer + "X"), Decoded(statuses: [200], body: "hello world", ends: 1, leftover: 1))
        // Cut mid-chunk by a close: no end.
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n20\r\nhello", closed: true),
                       Decoded(statuses: [200], body: "hello"))
    }

    func testABodyWithoutLengthRunsUntilTheClose() {
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world", closed: true),
                       Decoded(statuses: [200], body: "hello world", ends: 1))
        XCTAssertEqual(decodeEverySplit("HTTP/1.0 200 OK\r\n\r\nhello", closed: true), Decoded(statuses: [200], body: "hello", ends: 1))
        // Not over until the close.
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 200 OK\r\n\r\nhello"), Decoded(statuses: [200], body: "hello"))
    }

    func testAnswersWithoutBodyEndAtTheirHead() {
        // HEAD: the length is the GET's; no body follows, whatever the fields say.
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", toHEAD: true), Decoded(statuses: [200], ends: 1))
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", toHEAD: true),
                       Decoded(statuses: [200], ends: 1))
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 200 OK\r\n\r\n", toHEAD: true), Decoded(statuses: [200], ends: 1))
        // A body sent anyway is bytes past the answer.
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", toHEAD: true),
                       Decoded(statuses: [200], ends: 1, leftover: 5))
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 204 No Content\r\n\r\n"), Decoded(statuses: [204], ends: 1))
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"), Decoded(statuses: [304], ends: 1))
    }

    func testInterimAnswersAreSkipped() {
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                                        + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
                       Decoded(statuses: [200], body: "ok", ends: 1))
        // A 101 is reported, and nothing after it is read.
        XCTAssertEqual(decodeEverySplit("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"), Decoded(statuses: [101]))
    }

    func testGarbledAnswersAreRefused() {
        let refused: [(String, String)] = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello", "both Content-Length and Transfer-Encoding"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", "more than one Content-Length"),
            ("HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", "obsolete line folding"),
            ("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "LF without CR"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding other than chunked"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n", "chunk data not followed by CRLF"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n", "a trailer field"),
            ("HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: 2000) + "\r\n\r\n", "response head too large"),
            ("SSH-2.0-OpenSSH_9.6\r\n", "not start with an HTTP version"),
        ]
        for (input, reason) in refused {
            let out = decodeEverySplit(input)
            XCTAssertTrue(out.error?.contains(reason) ?? false, "\(input.prefix(60).debugDescription): \(out)")
            XCTAssertEqual(out.ends, 0)
        }
    }

    func testBytesBeforeAnyRequestAreRefused() {
        var decoder = UpstreamResponseDecoder()
        var buffer = ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\n")
        XCTAssertThrowsError(try decoder.next(&buffer))
        var empty = ByteBuffer()
        XCTAssertNil(try decoder.next(&empty))
    }

    // MARK: The handler on a channel

    final class Recorder: UpstreamDelegate {
        var parts: [String] = []
        var closedError: (any Error)?
        var closes = 0
        weak var handler: UpstreamHandler?
        /// On `.end`, what an exchange does: detach.
        func upstreamRead(_ part: UpstreamPart) {
            switch part {
            case .head(let h): parts.append("head \(h.status)")
            case .body(let b): parts.append("body \(String(buffer: b))")
            case .end:
                parts.append("end")
                handler?.delegate = nil
            }
        }
        func upstreamReadComplete() {}
        func upstreamClosed(error: (any Error)?) {
            closes += 1
            closedError = error
        }
    }

    func connected() throws -> (EmbeddedChannel, UpstreamHandler, Recorder) {
        let handler = UpstreamHandler()
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8000)).wait()
        let recorder = Recorder()
        recorder.handler = handler
        return (channel, handler, recorder)
    }

    func send(_ handler: UpstreamHandler, _ recorder: Recorder, head: Bool = false) {
        handler.delegate = recorder
        handler.send(answeringHEAD: head, serializedHead: ByteBuffer(string: "POST /v1/x HTTP/1.1\r\ncontent-length: 2\r\n\r\n"),
                     body: ByteBuffer(string: "{}"))
    }

    func testARequestGoesOutAsItsBytesInOneFlush() throws {
        let (channel, handler, recorder) = try connected()
        send(handler, recorder)
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) },
                       "POST /v1/x HTTP/1.1\r\ncontent-length: 2\r\n\r\n")
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) }, "{}")
        XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self))
        _ = try? channel.finish()
    }

    func testAKeptAliveConnectionCarriesTheNextRequest() throws {
        let (channel, handler, recorder) = try connected()
        send(handler, recorder)
        XCTAssertFalse(handler.isReusable, "an answer is outstanding")
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        XCTAssertEqual(recorder.parts, ["head 200", "body ok", "end"])
        XCTAssertTrue(handler.isReusable)
        XCTAssertTrue(channel.isActive)
        send(handler, recorder, head: true)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"))
        XCTAssertEqual(recorder.parts, ["head 200", "body ok", "end", "head 200", "end"])
        XCTAssertTrue(handler.isReusable)
        _ = try? channel.finish()
    }

    func testBytesPastAnAnswerSpoilTheConnectionBeforeTheEndIsHeard() throws {
        let (channel, handler, recorder) = try connected()
        var reusableAtEnd: Bool?
        final class Spy: UpstreamDelegate {
            let inner: Recorder
            let atEnd: () -> Void
            init(_ inner: Recorder, atEnd: @escaping () -> Void) {
                self.inner = inner
                self.atEnd = atEnd
            }
            func upstreamRead(_ part: UpstreamPart) {
                if case .end = part { atEnd() }
                inner.upstreamRead(part)
            }
            func upstreamReadComplete() {}
            func upstreamClosed(error: (any Error)?) { inner.upstreamClosed(error: error) }
        }
        let spy = Spy(recorder) { reusableAtEnd = handler.isReusable }
        send(handler, recorder)
        handler.delegate = spy
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nXX"))
        XCTAssertEqual(recorder.parts, ["head 200", "body ok", "end"], "the answer itself is delivered whole")
        XCTAssertEqual(reusableAtEnd, false, "the pool must not take it back at the end")
        XCTAssertFalse(handler.isReusable)
        XCTAssertFalse(channel.isActive, "closed")
        XCTAssertEqual(recorder.closes, 0, "the request had ended: nothing to fail")
    }

    func testBytesWhileNoRequestIsOutstandingCloseTheConnection() throws {
        let (channel, handler, recorder) = try connected()
        send(handler, recorder)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        XCTAssertTrue(channel.isActive)
        // A later read, while the connection sits in the pool.
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nXX"))
        XCTAssertFalse(channel.isActive)
        XCTAssertFalse(handler.isReusable)
        XCTAssertEqual(recorder.parts, ["head 200", "body ok", "end"])
    }

    func testAGarbledAnswerFailsTheTryAsAProtocolError() throws {
        let (channel, handler, recorder) = try connected()
        send(handler, recorder)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok"))
        XCTAssertEqual(recorder.parts, [])
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(recorder.closes, 1)
        XCTAssertTrue(recorder.closedError is UpstreamProtocolError, "\(String(describing: recorder.closedError))")
        XCTAssertFalse(handler.isReusable)
    }

    func testABrokenChunkAfterTheHeadBreaksTheAnswerOff() throws {
        let (channel, _, recorder) = try connected()
        let handler = try channel.pipeline.syncOperations.handler(type: UpstreamHandler.self)
        send(handler, recorder)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n"))
        XCTAssertEqual(recorder.parts, ["head 200", "body ok"])
        XCTAssertFalse(channel.isActive)
        XCTAssertEqual(recorder.closes, 1)
        XCTAssertTrue(recorder.closedError is UpstreamProtocolError)
    }

    func testAfterA101TheConnectionIsNotReusable() throws {
        let (channel, handler, recorder) = try connected()
        send(handler, recorder)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"))
        XCTAssertEqual(recorder.parts, ["head 101"])
        XCTAssertFalse(handler.isReusable)
        _ = try? channel.finish()
    }

    func testABodyUntilTheCloseEndsAtTheClose() throws {
        let (channel, handler, recorder) = try connected()
        send(handler, recorder)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\nhello "))
        try channel.writeInbound(ByteBuffer(string: "world"))
        XCTAssertEqual(recorder.parts, ["head 200", "body hello ", "body world"])
        channel.pipeline.fireChannelInactive()
        XCTAssertEqual(recorder.parts, ["head 200", "body hello ", "body world", "end"])
        XCTAssertEqual(recorder.closes, 0, "a clean end, not a failure")
        XCTAssertFalse(handler.isReusable)
    }

    func testAReadErrorDuringABodyUntilTheCloseIsNoEnd() throws {
        let (channel, handler, recorder) = try connected()
        send(handler, recorder)
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\nhello"))
        channel.pipeline.fireErrorCaught(IOError(errnoCode: ECONNRESET, reason: "read"))
        XCTAssertEqual(recorder.parts, ["head 200", "body hello"])
        XCTAssertEqual(recorder.closes, 1)
        XCTAssertFalse(handler.isReusable)
    }
}
