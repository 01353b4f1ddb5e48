import NIOCore
import NIOHTTP1
import TollgateCore

/// The one place that frames answers on a client connection: every answer — forwarded, cached,
/// local, refused — is serialized here, and nothing else writes response bytes (NIO's response
/// encoder is not in the pipeline). It owns what HTTP/1.1 says about bodies:
/// - an answer to `HEAD`, a 1xx, 204 or 304 has a head and no body, whatever is written after it;
/// - a body of known length is framed by `content-length` and passed as is; bytes past the length
///   are dropped (and the connection is closed after the answer, since its sender lied);
/// - a body of unknown length is framed `chunked`, so the connection stays usable afterwards.
///
/// The request's method is given with each answer, so a pipelined `HEAD` cannot fall out of
/// step with its answer (NIO's encoder kept its own queue of methods, which answers written past
/// it did not advance: a HEAD after a cache hit was answered with a body-less GET).
struct ResponseWriter {
    enum Framing: Equatable {
        /// No body may follow the head.
        case none
        /// `content-length`: this many bytes still to go.
        case length(remaining: Int)
        /// `transfer-encoding: chunked`.
        case chunked
        /// Ended by closing the connection: an HTTP/1.0 client cannot read chunks.
        case untilClose
    }

    /// What the request being answered asks of its answer's framing. Set from each request's
    /// head, before anything about it is written; the connection's handler reads `keepAlive`
    /// when the answer ends.
    struct Request {
        var method = HTTPMethod.GET
        /// An HTTP/1.0 request: no chunked framing for it.
        var http10 = false
        /// The connection stays open after this answer: the client allows it and nothing about
        /// the request (an upgrade, a body refused unread, a timeout) made a close necessary.
        var keepAlive = true
    }
    var request = Request()

    /// The answer being written, if one is.
    private(set) var framing: Framing?
    /// Bytes of the body dropped: written past a declared length, or to a body-less answer of a
    /// non-HEAD request. Past a declared length the connection must not be reused.
    private(set) var overrun = false

    var isWriting: Bool { framing != nil }

    /// Whether an answer with `status` to a request with `method` carries a body.
    static func hasBody(status: Int, method: HTTPMethod) -> Bool {
        !(method == .HEAD || (100..<200).contains(status) || status == 204 || status == 304)
    }

    /// Serializes the head of an answer into `buffer` and starts its framing.
    /// - Parameters:
    ///   - headers: the answer's own headers, without `content-length`, `transfer-encoding` and
    ///     `connection`, which this writer sets.
    ///   - contentLength: the body's length when known; nil frames the body as chunked.
    ///   - close: the connection closes after this answer (`connection: close`).
    ///   - http10: the request was HTTP/1.0: a body of unknown length is ended by a close.
    mutating func head(into buffer: inout ByteBuffer, status: Int, headers: [(String, String)], contentLength: Int?,
                       method: HTTPMethod, close: Bool, http10: Bool = false) {
        head(into: &buffer, status: status, contentLength: contentLength, method: method, close: close, http10: http10) { buffer in
            for (name, value) in headers { buffer.writeHeader(name, value) }
        }
    }

    /// The head of a forwarded answer: the instance's own fields copied from its head's bytes,
    /// without the hop-by-hop ones (`HeaderNames.droppedFromResponse` and whatever the instance's
    /// `Connection` names), then the gateway's own, which `gatewayFields` writes as header lines.
    /// The status line and framing are the writer's, as for every answer.
    mutating func head(into buffer: inout ByteBuffer, status: Int, forwarding upstream: UpstreamHead, contentLength: Int?,
                       closing: Bool, gatewayFields: (inout ByteBuffer) -> Void) {
        head(into: &buffer, status: status, contentLength: contentLength, method: request.method,
             close: closing || !request.keepAlive, http10: request.http10) { buffer in
            upstream.bytes.withUnsafeReadableBytes { bytes in
                let head = upstream.head
                for field in head.fields {
                    if HeaderNames.matches(bytes, field.name, anyOf: HeaderNames.droppedFromResponse) { continue }
                    if head.isListedInConnection(field.name, in: bytes) { continue }
                    // The parser let no CR, LF or other control into a name or value.
                    buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[field.name]))
                    buffer.writeStaticString(": ")
                    buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[field.value]))
                    buffer.writeStaticString("\r\n")
                }
            }
            gatewayFields(&buffer)
        }
    }

    /// The status line, `fields` (which write the answer's own header lines), then the framing
    /// headers this writer chooses and the empty line; starts the answer's framing.
    private mutating func head(into buffer: inout ByteBuffer, status: Int, contentLength: Int?, method: HTTPMethod, close: Bool,
                               http10: Bool, fields: (inout ByteBuffer) -> Void) {
        precondition(framing == nil, "an answer's head written while another answer is in progress")
        overrun = false
        buffer.writeStaticString("HTTP/1.1 ")
        buffer.writeDecimal(status)
        buffer.writeStaticString(" ")
        buffer.writeString(HTTPResponseStatus(statusCode: status).reasonPhrase)
        buffer.writeStaticString("\r\n")
        fields(&buffer)
        let bodyless = status == 204 || status == 304 || (100..<200).contains(status)
        if !bodyless {
            // A HEAD answer carries the framing headers the GET would have had (RFC 9110 9.3.2).
            if let contentLength {
                buffer.writeHeader("content-length", decimal: contentLength)
            } else if !http10 {
                buffer.writeStaticString("transfer-encoding: chunked\r\n")
            }
        }
        let closeDelimited = http10 && contentLength == nil && Self.hasBody(status: status, method: method)
        if close || closeDelimited { buffer.writeStaticString("connection: close\r\n") }
        buffer.writeStaticString("\r\n")
        if !Self.hasBody(status: status, method: method) {
            framing = Framing.none
        } else if let contentLength {
            framing = .length(remaining: max(0, contentLength))
        } else {
            framing = http10 ? .untilClose : .chunked
        }
    }

    /// The head of an answer to `request`. `closing`: the connection closes after it whatever
    /// the request allows (the gateway is draining).
    mutating func head(into buffer: inout ByteBuffer, status: Int, headers: [(String, String)], contentLength: Int?,
                       closing: Bool) {
        head(into: &buffer, status: status, headers: headers, contentLength: contentLength, method: request.method,
             close: closing || !request.keepAlive, http10: request.http10)
    }

    /// Frames `part` of the body into `buffer`. Returns false when nothing was written.
    @discardableResult
    mutating func body(_ part: ByteBuffer, into buffer: inout ByteBuffer) -> Bool {
        guard let framing, part.readableBytes > 0 else { return false }
        switch framing {
        case .none:
            return false
        case .length(let remaining):
            var part = part
            if part.readableBytes > remaining {
                overrun = true
                part = part.getSlice(at: part.readerIndex, length: remaining)!
            }
            self.framing = .length(remaining: remaining - part.readableBytes)
            guard part.readableBytes > 0 else { return false }
            buffer.writeBuffer(&part)
            return true
        case .chunked:
            var part = part
            buffer.writeString(String(part.readableBytes, radix: 16))
            buffer.writeStaticString("\r\n")
            buffer.writeBuffer(&part)
            buffer.writeStaticString("\r\n")
            return true
        case .untilClose:
            var part = part
            buffer.writeBuffer(&part)
            return true
        }
    }

    /// A body part that can go out without copying: a length-framed part within its length.
    /// Nil when it must be framed (chunked) or cut; then use `body(_:into:)`.
    mutating func passThrough(_ part: ByteBuffer) -> ByteBuffer? {
        guard case .length(let remaining) = framing, part.readableBytes <= remaining else { return nil }
        framing = .length(remaining: remaining - part.readableBytes)
        return part
    }

    /// Whether the body may be passed without framing (`passThrough`), for callers that avoid
    /// building a buffer.
    var isLengthFramed: Bool { if case .length = framing { true } else { false } }

    /// Ends the answer. Returns whether the connection is still well framed: false when a
    /// declared length was not reached or was overrun (then only a close is honest).
    mutating func end(into buffer: inout ByteBuffer) -> Bool {
        defer { framing = nil }
        switch framing {
        case .none?:
            return true
        case .length(let remaining)?:
            return remaining == 0 && !overrun
        case .chunked?:
            buffer.writeStaticString("0\r\n\r\n")
            return true
        case .untilClose?:
            return false  // the close ends the body
        case nil:
            return true
        }
    }

    /// Drops an answer that broke off (the connection is being closed).
    mutating func abandon() { framing = nil }

    /// Body parts up to this size are copied into the buffer of the head before them, so that a
    /// small answer (or request) leaves in one write with one iovec rather than two; larger ones
    /// go out as the buffers they came in.
    static let coalesceLimit = 8 * 1024
}
