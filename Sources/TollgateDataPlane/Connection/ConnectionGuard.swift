import NIOCore
import NIOHTTP1
import TollgateCore

/// First handler of a client connection, in front of the HTTP decoder. It sees raw bytes, so
/// it knows when a request head *starts* arriving, which the decoder cannot tell:
/// - an idle keep-alive connection is closed after `idleTimeout`;
/// - a head that has started must be complete within `headerTimeout` (a client sending its
///   head byte by byte is answered 408 and closed, not kept forever);
/// - protocol errors that happen before any request was understood are answered here with a
///   raw HTTP response, since the HTTP handlers behind it have nothing to answer.
final class ConnectionGuard: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case idle
        case receivingHead
        case busy
        case closing
    }

    private let idleTimeout: TimeAmount
    private let headerTimeout: TimeAmount
    private var state = State.idle
    private var timer: DeadlineTimer?
    private var headTimed = false
    private var context: ChannelHandlerContext?

    init(idleTimeout: TimeAmount, headerTimeout: TimeAmount) {
        self.idleTimeout = idleTimeout
        self.headerTimeout = headerTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        timer = DeadlineTimer(eventLoop: context.eventLoop) { [weak self] in self?.timedOut() }
        if context.channel.isActive { timer?.set(.now() + idleTimeout) }
    }

    func channelActive(context: ChannelHandlerContext) {
        if let refusal {
            self.refusal = nil
            rejectAndClose(refusal)
            return
        }
        timer?.set(.now() + idleTimeout)
        context.fireChannelActive()
    }

    /// A connection past a limit: answered with `error` as soon as it is active, then closed.
    private var refusal: GatewayError?
    func refuseOnActive(_ error: GatewayError) {
        refusal = error
        if let context, context.channel.isActive {
            self.refusal = nil
            rejectAndClose(error)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .idle = state {
            state = .receivingHead
            headTimed = false
        }
        context.fireChannelRead(data)
        // Most heads arrive whole in one read and are parsed right here; only a head still
        // incomplete after this read gets a timer.
        if case .receivingHead = state, !headTimed {
            headTimed = true
            timer?.set(.now() + headerTimeout)
        }
    }

    /// The decoder produced a complete head: timing now belongs to the request.
    func requestHeadReceived() {
        if case .closing = state { return }
        state = .busy
        timer?.set(nil)
    }

    /// The response went out in full; the connection waits for the next request.
    func responseCompleted() {
        guard case .busy = state else { return }
        state = .idle
        timer?.set(.now() + idleTimeout)
    }

    /// Writes an interim `100 Continue`, ordered with everything written before it.
    func writeContinue() {
        context?.writeAndFlush(wrapOutboundOut(ByteBuffer(staticString: "HTTP/1.1 100 Continue\r\n\r\n")), promise: nil)
    }

    /// Writes a complete raw response (bypassing the HTTP encoder) and closes.
    func rejectAndClose(_ error: GatewayError) {
        guard let context else { return }
        if case .closing = state { return }
        state = .closing
        timer?.cancel()
        let body = error.body
        var headers = [("content-type", "application/json")]
        if let retry = error.retryAfter { headers.append(("retry-after", String(retry))) }
        var buffer = context.channel.allocator.buffer(capacity: 256 + body.utf8.count)
        // No request was understood, so no answer is in progress on this connection: a writer
        // of its own frames this last one.
        var writer = ResponseWriter()
        writer.head(into: &buffer, status: error.status, headers: headers, contentLength: body.utf8.count, method: .GET, close: true)
        writer.body(ByteBuffer(string: body), into: &buffer)
        context.writeAndFlush(wrapOutboundOut(buffer)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    private func timedOut() {
        guard let context else { return }
        switch state {
        case .idle:
            state = .closing
            context.close(promise: nil)
        case .receivingHead:
            rejectAndClose(.requestTimeout)
        case .busy, .closing:
            break
        }
    }
}
