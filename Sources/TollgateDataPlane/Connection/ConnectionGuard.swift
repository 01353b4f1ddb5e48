import NIOCore
import NIOHTTP1
import TollgateCore

/// The connection-level timing of a client connection, run by its `GatewayHandler` on the raw
/// reads (it was a handler of its own in front of the decoder: one more hop for every read,
/// write and flush). It sees when a request head *starts* arriving, which the decoder cannot tell:
/// - an idle keep-alive connection is closed after `idleTimeout`;
/// - a head that has started must be complete within `headerTimeout` (a client sending its
///   head byte by byte is answered 408 and closed, not kept forever);
/// - errors that happen before any request was understood (a head the parser refuses, a
///   connection past `limits.max_connections`) are answered here with a raw HTTP response.
/// Event-loop bound, like the handler that owns it.
final class ConnectionGuard {
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
    /// A connection past a limit: answered with it as soon as it is active, then closed.
    private var refusal: GatewayError?

    init(idleTimeout: TimeAmount, headerTimeout: TimeAmount) {
        self.idleTimeout = idleTimeout
        self.headerTimeout = headerTimeout
    }

    /// The owning handler was added: `context` is where the guard writes and closes.
    func attach(_ context: ChannelHandlerContext) {
        self.context = context
        // Unowned: the timer is this guard's alone (see `ExchangeTimers`).
        timer = DeadlineTimer(eventLoop: context.eventLoop) { [unowned self] in self.timedOut() }
        if context.channel.isActive { timer?.set(.now() + idleTimeout) }
    }

    /// The connection became active. False when it is refused (answered and closed here): the
    /// owner then passes nothing on.
    func activated() -> Bool {
        if let refusal {
            self.refusal = nil
            rejectAndClose(refusal)
            return false
        }
        timer?.set(.now() + idleTimeout)
        return true
    }

    /// Answers the connection with `error` as soon as it is active (at once if it is), then closes.
    func refuseOnActive(_ error: GatewayError) {
        refusal = error
        if let context, context.channel.isActive {
            self.refusal = nil
            rejectAndClose(error)
        }
    }

    func detach() {
        timer?.cancel()
        context = nil
    }

    func inactive() {
        timer?.cancel()
    }

    /// Bytes arrived: on an idle connection, a head has started.
    func readArrived() {
        if case .idle = state {
            state = .receivingHead
            headTimed = false
        }
    }

    /// The read was decoded. Most heads arrive whole in one read and are parsed before this;
    /// only a head still incomplete after its read gets a timer.
    func readDecoded() {
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
        context?.writeAndFlush(NIOAny(ByteBuffer(staticString: "HTTP/1.1 100 Continue\r\n\r\n")), promise: nil)
    }

    /// Writes a complete answer to no request and closes.
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
        context.writeAndFlush(NIOAny(buffer)).assumeIsolated().whenComplete { _ in
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
