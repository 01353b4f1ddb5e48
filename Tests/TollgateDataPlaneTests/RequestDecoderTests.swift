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
            while let part = try channel.readInbound(as: HTTPServerRequestPart.self) {
                switch part {
                case .head(let head):
                    out.heads.append("\(head.method.rawValue) \(head.uri)")
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
        guard case .head(let head)? = try channel.readInbound(as: HTTPServerRequestPart.self) else { return XCTFail("no head") }
        XCTAssertEqual(head.version, .http1_0)
        XCTAssertEqual(head.headers.first(name: "authorization"), "Bearer k")
        XCTAssertEqual(head.headers[canonicalForm: "x-two"], ["a", "b"])
        XCTAssertFalse(head.isKeepAlive, "HTTP/1.0 without keep-alive")
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
            XCTAssertNil(try channel.readInbound(as: HTTPServerRequestPart.self), "no part of a refused head")
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
        guard case .head? = try channel.readInbound(as: HTTPServerRequestPart.self) else { return XCTFail("the head came first") }
    }
}
