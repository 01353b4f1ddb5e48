import NIOCore
import NIOHTTP1
import XCTest

@testable import TollgateDataPlane

/// The one writer of answers: framing decided by the request's method and the answer's status,
/// never by which path produced the answer.
final class ResponseWriterTests: XCTestCase {
    func write(status: Int = 200, method: HTTPMethod = .GET, length: Int?, close: Bool = false, body: [String]) -> (String, Bool) {
        var writer = ResponseWriter()
        var out = ByteBuffer()
        writer.head(into: &out, status: status, headers: [("content-type", "application/json")], contentLength: length,
                    method: method, close: close)
        for part in body { writer.body(ByteBuffer(string: part), into: &out) }
        let ok = writer.end(into: &out)
        XCTAssertFalse(writer.isWriting)
        return (String(buffer: out), ok)
    }

    func testLengthFramedBodyPassesAsIs() {
        let (text, ok) = write(length: 7, body: ["{\"a\":", "1}"])
        XCTAssertEqual(text, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}")
        XCTAssertTrue(ok)
    }

    func testHeadGetsTheFramingHeadersAndNoBody() {
        let (text, ok) = write(method: .HEAD, length: 7, body: ["{\"a\":1}"])
        XCTAssertEqual(text, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n")
        XCTAssertTrue(ok)
        let (chunked, _) = write(method: .HEAD, length: nil, body: ["data"])
        XCTAssertEqual(chunked, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
    }

    func testNoContentAndNotModifiedHaveNoBodyNorFraming() {
        for status in [204, 304] {
            let (text, ok) = write(status: status, length: 4, body: ["abcd"])
            XCTAssertFalse(text.contains("content-length"), text)
            XCTAssertFalse(text.contains("abcd"), text)
            XCTAssertTrue(text.hasSuffix("\r\n\r\n"))
            XCTAssertTrue(ok)
        }
    }

    func testUnknownLengthIsChunked() {
        let (text, ok) = write(length: nil, body: ["data: 1\n\n", "", "data: [DONE]\n\n"])
        XCTAssertEqual(text, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        XCTAssertTrue(ok)
    }

    func testBytesPastTheLengthAreCutAndTheConnectionIsNotReused() {
        let (text, ok) = write(length: 3, body: ["abcdef"])
        XCTAssertTrue(text.hasSuffix("\r\n\r\nabc"), text)
        XCTAssertFalse(ok, "a sender that overran its length: only a close is honest")
    }

    func testAShortBodyIsNotWellFramed() {
        let (_, ok) = write(length: 10, body: ["abc"])
        XCTAssertFalse(ok)
    }

    func testCloseIsAnnounced() {
        let (text, _) = write(status: 503, length: 2, close: true, body: ["{}"])
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), text)
        XCTAssertTrue(text.contains("connection: close\r\n"), text)
    }

    func testPassThroughOnlyWithinTheLength() {
        var writer = ResponseWriter()
        var out = ByteBuffer()
        writer.head(into: &out, status: 200, headers: [], contentLength: 5, method: .POST, close: false)
        XCTAssertNotNil(writer.passThrough(ByteBuffer(string: "abc")))
        XCTAssertNil(writer.passThrough(ByteBuffer(string: "abc")), "past the length it must be cut, not passed")
        XCTAssertTrue(writer.body(ByteBuffer(string: "de"), into: &out))
        XCTAssertTrue(writer.end(into: &out))
    }

    func testHTTP10GetsNoChunksButAClose() {
        var writer = ResponseWriter()
        var out = ByteBuffer()
        writer.head(into: &out, status: 200, headers: [], contentLength: nil, method: .POST, close: false, http10: true)
        writer.body(ByteBuffer(string: "data: 1\n\n"), into: &out)
        XCTAssertFalse(writer.end(into: &out), "the close ends the body")
        XCTAssertEqual(String(buffer: out), "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\ndata: 1\n\n")
    }

    // MARK: Forwarded answers

    /// An instance's head as the upstream decoder hands it on.
    func upstream(_ text: String, toHEAD: Bool = false) throws -> UpstreamHead {
        var decoder = UpstreamResponseDecoder()
        decoder.expectAnswer(toHEAD: toHEAD)
        var buffer = ByteBuffer(string: text)
        guard case .head(let head)? = try decoder.next(&buffer) else { throw XCTSkip("no head") }
        return head
    }

    func testAForwardedHeadCopiesTheInstanceFieldsButNotTheHopByHopOnes() throws {
        let head = try upstream("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive, X-Hop\r\n"
            + "Keep-Alive: timeout=5\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nTrailer: x\r\n"
            + "Upgrade: h2c\r\nProxy-Connection: keep-alive\r\nX-Request-Id: theirs\r\nX-Kept:  a  b \r\nx-hops: 2\r\n\r\n")
        var writer = ResponseWriter()
        var out = ByteBuffer()
        writer.head(into: &out, status: 200, forwarding: head, contentLength: nil, closing: false) { $0.writeHeader("x-request-id", "ours") }
        XCTAssertEqual(String(buffer: out), "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Kept: a  b\r\nx-hops: 2\r\n"
            + "x-request-id: ours\r\ntransfer-encoding: chunked\r\n\r\n")
        XCTAssertTrue(writer.isWriting)
    }

    func testAForwardedHeadIsFramedByTheWriter() throws {
        // The instance's length on a HEAD answer, no body; its reason phrase is not forwarded.
        let head = try upstream("HTTP/1.1 200 Fine\r\nContent-Length: 7\r\n\r\n", toHEAD: true)
        var writer = ResponseWriter()
        writer.request = ResponseWriter.Request(method: .HEAD, http10: false, keepAlive: true)
        var out = ByteBuffer()
        writer.head(into: &out, status: 200, forwarding: head, contentLength: 7, closing: false) { _ in }
        writer.body(ByteBuffer(string: "ignored"), into: &out)
        XCTAssertTrue(writer.end(into: &out))
        XCTAssertEqual(String(buffer: out), "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n")
        // An HTTP/1.0 client that may not keep the connection.
        let ok = try upstream("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        writer.request = ResponseWriter.Request(method: .GET, http10: true, keepAlive: false)
        out.clear()
        writer.head(into: &out, status: 200, forwarding: ok, contentLength: nil, closing: false) { _ in }
        XCTAssertEqual(String(buffer: out), "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
    }
}
