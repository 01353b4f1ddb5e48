import NIOCore
import NIOEmbedded
import NIOHTTP1
import TollgateCore
import XCTest

@testable import TollgateDataPlane

/// The client side's request decoder on an `EmbeddedChannel`: the parts it hands on, however the
/// bytes are split, and what it refuses.
final class RequestDecoderTests: XCTestCase {
    /// What came out, flattened: heads as "METHOD target", bodies concatenated per request, ends.
    struct Decoded: Equatable {
        var heads: [String] = []
        var bodies: [String] = []
        var ends = 0
    }

    func decode(_ chunks: [String], limits: RequestLimits = RequestLimits()) throws -> Decoded {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RequestDecoder(limits: limits)))
        defer { _ = try? channel.finish() }
        var out = Decoded()
        for chunk in chunks {
            try channel.writeInbound(ByteBuffer(string: chunk))
            while let part = try channel.readInbound(as: ClientRequestPart.self) {
                switch part {
                case .head(let head):
                    out.heads.append("\(head.method.rawValue) \(head.target)")
                    out.bodies.append("")
                case .body(let buffer):
                    out.bodies[out.bodies.count - 1] += String(buffer: buffer)
                case .end:
                    out.ends += 1
                }
            }
        }
        return out
    }

    static let pipelined =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"
        + "POST /v1/completions?x=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
        + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

    func testPipelinedRequestsWithBothFramingsAtEverySplit() throws {
        let expected = Decoded(heads: ["POST /v1/chat/completions", "POST /v1/completions?x=1", "GET /healthz"],
                               bodies: ["hello world", "hello world", ""], ends: 3)
        XCTAssertEqual(try decode([Self.pipelined]), expected)
        let bytes = Array(Self.pipelined)
        for split in 1..<bytes.count {
            XCTAssertEqual(try decode([String(bytes[..<split]), String(bytes[split...])]), expected, "split at \(split)")
        }
        XCTAssertEqual(try decode(bytes.map { String($0) }), expected, "byte by byte")
    }

    func testHeadersArriveAsSent() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RequestDecoder(limits: RequestLimits())))
        defer { _ = try? channel.finish() }
        try channel.writeInbound(ByteBuffer(string: "GET /v1/models HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer k\r\nX-Two: a\r\nx-two: b\r\n\r\n"))
        guard case .head(let head)? = try channel.readInbound(as: ClientRequestPart.self) else { return XCTFail("no head") }
        XCTAssertTrue(head.isHTTP10)
        XCTAssertEqual(head.credential, .key(KeyDigest(hashing: Array("k".utf8))))
        XCTAssertEqual(head.bytes.withUnsafeReadableBytes { b in head.parsed.fields.map { head.string($0.name) + "=" + head.string($0.value) } },
                       ["Host=x", "Authorization=Bearer k", "X-Two=a", "x-two=b"], "every field as sent, names in their case")
        XCTAssertFalse(head.keepAlive, "HTTP/1.0 without keep-alive")
    }

    /// What the gateway reads of a head it reads from the head's own bytes.
    func testTheValuesTheGatewayActsOnAreReadFromTheBytes() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RequestDecoder(limits: RequestLimits())))
        defer { _ = try? channel.finish() }
        try channel.writeInbound(ByteBuffer(string: "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: x\r\nauthorization: BEARER   k2\r\n"
            + "Cache-Control: no-cache\r\nX-Request-Id: abc\r\ncache-control: max-age=5\r\nX-Tollgate-Other: 1\r\n"
            + "x-tollgate-priority:  batch \r\nContent-Length: 2\r\n\r\n{}"))
        guard case .head(let head)? = try channel.readInbound(as: ClientRequestPart.self) else { return XCTFail("no head") }
        XCTAssertTrue(head.pathIs("/v1/chat/completions"))
        XCTAssertFalse(head.pathIs("/v1/chat/completion"))
        XCTAssertFalse(head.pathIs("/v1/completions"))
        XCTAssertEqual(head.path, "/v1/chat/completions")
        XCTAssertEqual(head.target, "/v1/chat/completions?x=1")
        XCTAssertEqual(head.method, .POST)
        XCTAssertEqual(head.credential, .key(KeyDigest(hashing: Array("k2".utf8))), "scheme in any case, spaces skipped")
        XCTAssertEqual(head.cacheControl, "no-cache,max-age=5", "every Cache-Control field, in order")
        XCTAssertEqual(head.requestID, "abc")
        XCTAssertEqual(head.priority, "batch")
        XCTAssertEqual(head.contentLength, 2)
        guard case .body(let body)? = try channel.readInbound(as: ClientRequestPart.self) else { return XCTFail("no body") }
        XCTAssertEqual(String(buffer: body), "{}")
        // A head without them.
        try channel.writeInbound(ByteBuffer(string: "GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Basic eDp5\r\n\r\n"))
        _ = try channel.readInbound(as: ClientRequestPart.self)  // the end of the first
        guard case .head(let plain)? = try channel.readInbound(as: ClientRequestPart.self) else { return XCTFail("no second head") }
        XCTAssertNil(plain.cacheControl)
        XCTAssertNil(plain.requestID)
        XCTAssertNil(plain.priority)
        XCTAssertEqual(plain.credential, .malformed)
        XCTAssertEqual(plain.contentLength, 0)
        XCTAssertTrue(plain.pathIs("/healthz"))
    }

    func testNothingIsReadAfterARequestThatSwitchesProtocols() throws {
        let decoded = try decode(["GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"])
        XCTAssertEqual(decoded.heads, ["GET /ws"], "bytes after an upgrade request are not another request")
        XCTAssertEqual(decoded.ends, 1)
    }

    func testRefusalsAreErrorsAndFinal() throws {
        for bad in ["POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                    "GET / HTTP/1.1\nHost: x\n\n", "GET / HTTP/1.1\r\n\r\n", "BREW / HTTP/1.1\r\nHost: x\r\n\r\n"] {
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(RequestDecoder(limits: RequestLimits())))
            XCTAssertThrowsError(try channel.writeInbound(ByteBuffer(string: bad)), bad.debugDescription) { error in
                XCTAssertTrue(error is RequestHeadError, "\(error)")
            }
            XCTAssertNil(try channel.readInbound(as: ClientRequestPart.self), "no part of a refused head")
            _ = try? channel.finish()
        }
        var limits = RequestLimits()
        limits.maxHeaderCount = 3
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RequestDecoder(limits: limits)))
        XCTAssertThrowsError(try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n"))) { error in
            XCTAssertEqual(error as? RequestHeadError, .tooManyFields)
        }
        _ = try? channel.finish()
    }

    func testABrokenChunkedBodyIsAnError() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RequestDecoder(limits: RequestLimits())))
        defer { _ = try? channel.finish() }
        XCTAssertThrowsError(try channel.writeInbound(ByteBuffer(string: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"))) { error in
            XCTAssertTrue(error is ChunkedBodyError, "\(error)")
        }
        guard case .head? = try channel.readInbound(as: ClientRequestPart.self) else { return XCTFail("the head came first") }
    }
}
