import NIOCore
import TollgateCore

/// The head of an instance's answer: what `ResponseHeadParser` read, and the head's bytes it
/// was read from (a slice of what arrived, not a copy), which its ranges index from 0.
struct UpstreamHead {
    let head: ResponseHead
    let bytes: ByteBuffer

    var status: Int { head.status }
    var keepAlive: Bool { head.keepAlive }
    var framing: ResponseHead.Framing { head.framing }
}

/// The parts of an instance's answer, in order: one head, body parts (never empty), one end.
enum UpstreamPart {
    case head(UpstreamHead)
    /// A slice of what arrived: chunk data without its framing, or the bytes of a body framed by
    /// length or by the close, never past the answer's end.
    case body(ByteBuffer)
    case end
}

/// Why an instance's answer could not be read: the try fails (the instance is blamed) and the
/// connection is closed, never reused.
struct UpstreamProtocolError: Error, CustomStringConvertible {
    enum Reason {
        case head(ResponseHeadError)
        case chunkedBody(ChunkedBodyError)
        /// Bytes arrived while no request was outstanding on the connection.
        case unexpectedBytes
    }

    let reason: Reason

    var description: String {
        switch reason {
        case .head(let e): "invalid answer head: \(e)"
        case .chunkedBody(let e): "invalid chunked answer: \(e)"
        case .unexpectedBytes: "bytes while no request was outstanding"
        }
    }
}

/// Reads an instance's answers out of the bytes of one upstream connection, one answer per
/// request sent (`expectAnswer`), with the gateway's own strict parsers: `ResponseHeadParser`
/// for heads (1xx other than 101 skipped), `ChunkedBodyDecoder` for chunked bodies. Pure apart
/// from `ByteBuffer`: `UpstreamHandler` feeds it and delivers what it returns.
struct UpstreamResponseDecoder {
    private enum State {
        /// No request outstanding: any byte is one too many.
        case idle
        case head(answeringHEAD: Bool)
        /// The head was delivered; the body has no bytes: `.end` next.
        case ending
        case contentLength(remaining: Int)
        case chunked(ChunkedBodyDecoder)
        case untilClose
        /// After a 101: the connection speaks something else now; it is closed, nothing is read.
        case spent
    }

    private var state = State.idle
    private var parser: ResponseHeadParser

    init(limits: ResponseHeadParser.Limits = .init()) {
        parser = ResponseHeadParser(limits: limits)
    }

    /// Whether a request's answer is outstanding (from `expectAnswer` until its `.end`).
    var awaitingAnswer: Bool {
        switch state {
        case .idle, .spent: false
        default: true
        }
    }

    /// No answer outstanding and none broken off: another request may be sent (not after a 101,
    /// nor after a body ended by the close).
    var isIdle: Bool { if case .idle = state { true } else { false } }

    /// The body runs until the connection closes: `endAtClose()` ends it.
    var endsAtClose: Bool { if case .untilClose = state { true } else { false } }

    /// A request was sent: its answer comes next. `toHEAD`: the request was a HEAD.
    mutating func expectAnswer(toHEAD: Bool) {
        assert(!awaitingAnswer, "a request sent while another's answer is outstanding")
        parser.reset()
        state = .head(answeringHEAD: toHEAD)
    }

    /// The connection closed cleanly during a body framed by the close: its end.
    mutating func endAtClose() -> UpstreamPart? {
        guard case .untilClose = state else { return nil }
        state = .spent
        return .end
    }

    /// The next part from `buffer`'s readable bytes, consuming what it used; nil when more bytes
    /// are needed. Throws when the bytes are no valid answer (every refusal is final).
    mutating func next(_ buffer: inout ByteBuffer) throws(UpstreamProtocolError) -> UpstreamPart? {
        while true {
            switch state {
            case .idle:
                guard buffer.readableBytes == 0 else { throw UpstreamProtocolError(reason: .unexpectedBytes) }
                return nil
            case .spent:
                buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
                return nil
            case .head(let answeringHEAD):
                guard buffer.readableBytes > 0 else { return nil }
                let parsed = buffer.withUnsafeReadableBytes { bytes in
                    Result { () throws(ResponseHeadError) -> ResponseHead? in try parser.parse(bytes, answeringHEAD: answeringHEAD) }
                }
                let head: ResponseHead
                switch parsed {
                case .failure(let e): throw UpstreamProtocolError(reason: .head(e))
                case .success(nil): return nil
                case .success(let h?): head = h
                }
                if head.isInterim {
                    // 100 Continue, 103 Early Hints: the final answer follows (RFC 9110 §15.2).
                    buffer.moveReaderIndex(forwardBy: head.length)
                    continue
                }
                let bytes = buffer.readSlice(length: head.length)!
                if head.status == 101 {
                    state = .spent
                } else {
                    switch head.framing {
                    case .none, .contentLength(0): state = .ending
                    case .contentLength(let n): state = .contentLength(remaining: n)
                    case .chunked: state = .chunked(ChunkedBodyDecoder(limits: .init(maxBodyBytes: Int.max)))
                    case .untilClose: state = .untilClose
                    }
                }
                return .head(UpstreamHead(head: head, bytes: bytes))
            case .ending:
                state = .idle
                return .end
            case .contentLength(let remaining):
                guard buffer.readableBytes > 0 else { return nil }
                let n = min(remaining, buffer.readableBytes)
                let part = buffer.readSlice(length: n)!
                state = remaining == n ? .ending : .contentLength(remaining: remaining - n)
                return .body(part)
            case .untilClose:
                guard buffer.readableBytes > 0 else { return nil }
                return .body(buffer.readSlice(length: buffer.readableBytes)!)
            case .chunked(var decoder):
                guard buffer.readableBytes > 0 else { return nil }
                var offset = 0
                let event = buffer.withUnsafeReadableBytes { bytes in
                    Result { () throws(ChunkedBodyError) -> ChunkedBodyDecoder.Event in try decoder.next(bytes, from: &offset) }
                }
                // (A slice before the reader index moves: `getSlice` reads only readable bytes.)
                var data: ByteBuffer?
                if case .success(.data(let range)) = event {
                    data = buffer.getSlice(at: buffer.readerIndex + range.lowerBound, length: range.count)
                }
                buffer.moveReaderIndex(forwardBy: offset)
                switch event {
                case .failure(let e):
                    state = .spent
                    throw UpstreamProtocolError(reason: .chunkedBody(e))
                case .success(.data):
                    state = .chunked(decoder)
                    return .body(data!)
                case .success(.needMore):
                    state = .chunked(decoder)
                    return nil
                case .success(.end):
                    state = .idle
                    return .end
                }
            }
        }
    }
}
