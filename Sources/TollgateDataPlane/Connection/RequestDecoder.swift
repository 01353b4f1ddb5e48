import NIOCore
import TollgateCore

/// Reads requests off a client connection with the gateway's own strict parser — TollgateCore's
/// `RequestHeadParser` and `ChunkedBodyDecoder`, fuzzed against llhttp — in place of NIO's
/// `HTTPRequestDecoder`. It hands `GatewayHandler` the head as it arrived (`ClientHead`: the
/// head's bytes and the parser's ranges into them), the body in parts, the end. What gets
/// through is stricter than NIO's decoder let through: a head
/// two readers could read differently (CL+TE, duplicate lengths, obs-fold, bare CR or LF,
/// whitespace before a colon, unknown methods, an HTTP/1.1 request without Host …) is refused with
/// a `RequestHeadError`, answered 400 (431 past the size limits) and closed.
///
/// The head is parsed where it arrived: the parser sees the buffer's readable bytes from the
/// head's first byte as more arrive, and looks at each byte once. Body parts are slices of the
/// buffer, not copies. `GatewayHandler` runs it on each read itself (`next`), so no handler,
/// hop or boxed part stands between the socket and the connection's state machine.
struct RequestDecoder: ByteToMessageDecoder {
    typealias InboundOut = ClientRequestPart

    private enum Reading {
        /// A request head (the next, or the first).
        case head
        /// A body framed by `content-length`: this many bytes still to come.
        case length(Int)
        /// A chunked body.
        case chunked(ChunkedBodyDecoder)
        /// The request's end is next (its body is complete, or it has none).
        case ending
        /// After a request that switches protocols (CONNECT, Upgrade) or a refused head: the
        /// gateway answers and closes, and reads nothing more.
        case stopped
    }

    private var parser: RequestHeadParser
    private var reading = Reading.head
    /// The request being read switches protocols: nothing is read after its end.
    private var switching = false

    init(limits: RequestLimits) {
        parser = RequestHeadParser(limits: RequestHeadParser.Limits(limits))
    }

    /// The next part the bytes at hand complete, taken from `buffer`; nil when more bytes are
    /// needed. A refusal (`RequestHeadError`, `ChunkedBodyError`) is final: nothing is read after it.
    /// `GatewayHandler` calls this directly on what it reads (no handler in between).
    mutating func next(_ buffer: inout ByteBuffer) throws -> ClientRequestPart? {
        switch reading {
        case .stopped:
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return nil
        case .ending:
            reading = switching ? .stopped : .head
            return .end
        case .head:
            return try nextHead(&buffer)
        case .length(let remaining):
            guard buffer.readableBytes > 0 else { return nil }
            let part = buffer.readSlice(length: min(remaining, buffer.readableBytes))!
            reading = remaining == part.readableBytes ? .ending : .length(remaining - part.readableBytes)
            return .body(part)
        case .chunked(var decoder):
            guard buffer.readableBytes > 0 else { return nil }
            reading = .head  // no copy of the decoder's state while it is changed
            var offset = 0
            let event: ChunkedBodyDecoder.Event
            do {
                event = try buffer.withUnsafeReadableBytes { bytes throws(ChunkedBodyError) in try decoder.next(bytes, from: &offset) }
            } catch {
                reading = .stopped
                throw error
            }
            switch event {
            case .data(let range):
                let part = buffer.getSlice(at: buffer.readerIndex + range.lowerBound, length: range.count)!
                buffer.moveReaderIndex(forwardBy: offset)
                reading = .chunked(decoder)
                return .body(part)
            case .needMore:
                buffer.moveReaderIndex(forwardBy: offset)
                reading = .chunked(decoder)
                return nil
            case .end:
                buffer.moveReaderIndex(forwardBy: offset)
                reading = switching ? .stopped : .head
                return .end
            }
        }
    }

    private mutating func nextHead(_ buffer: inout ByteBuffer) throws -> ClientRequestPart? {
        guard buffer.readableBytes > 0 else { return nil }
        let parsed: RequestHead?
        do {
            parsed = try buffer.withUnsafeReadableBytes { bytes throws(RequestHeadError) in try parser.parse(bytes) }
        } catch {
            reading = .stopped
            throw error
        }
        guard let head = parsed else { return nil }
        let bytes = buffer.readSlice(length: head.length)!
        switching = head.switchesProtocol
        switch head.framing {
        case .none, .contentLength(0):
            reading = .ending
        case .contentLength(let length):
            reading = .length(length)
        case .chunked:
            // The body's size is the handler's to bound (`limits.max_body_bytes`, answered 413).
            reading = .chunked(ChunkedBodyDecoder(limits: .init(maxBodyBytes: .max)))
        }
        return .head(ClientHead(bytes: bytes, parsed: head))
    }

    // MARK: As a `ByteToMessageDecoder` (tests drive it this way on an `EmbeddedChannel`)

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let part = try next(&buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(part))
        // `ByteToMessageHandler` does not call again on an empty buffer: an end that needs no
        // bytes goes with the part before it.
        if case .ending = reading, let end = try next(&buffer) { context.fireChannelRead(wrapInboundOut(end)) }
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // What a closed connection left unfinished is the handler's to end (`channelInactive`).
        while try decode(context: context, buffer: &buffer) == .continue {}
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }
}
