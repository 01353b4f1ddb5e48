import NIOCore
import NIOPosix
import TollgateCore

/// What an upstream connection reports to the request that currently uses it.
protocol UpstreamDelegate: AnyObject {
    func upstreamRead(_ part: UpstreamPart)
    func upstreamReadComplete()
    /// The connection closed or failed while this delegate was attached.
    func upstreamClosed(error: (any Error)?)
}

/// The only handler of a keep-alive connection to one instance. It writes each request as the
/// bytes the exchange serialized, reads the answer with the gateway's own parsers
/// (`UpstreamResponseDecoder`), relays its parts to the attached request, and holds reads while
/// the client cannot take more (backpressure, as swift-nio-examples' `GlueHandler`).
///
/// A connection on which bytes arrive that no request asked for — while none is outstanding,
/// or past an answer's end — is closed and never reused: those bytes would be taken for the
/// next request's answer.
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The request using the connection. Strong, not weak (a weakly referenced exchange would
    /// pay the runtime's slow path on every retain, see `ExchangeTimers`): the exchange detaches
    /// itself whenever it lets the connection go, the pool's `release` and a close detach it too.
    var delegate: (any UpstreamDelegate)?
    /// Called once when the connection closes, so that the pool forgets it.
    var onClose: (() -> Void)?
    private var context: ChannelHandlerContext?
    private var readPaused = false
    private var pendingRead = false
    private var closedError: (any Error)?
    private var decoder = UpstreamResponseDecoder()
    /// What arrived and was not decoded yet (part of a head, most often nothing).
    private var pending = ByteBuffer()
    /// Bytes arrived past an answer's end, or the answer could not be read: never reuse.
    private(set) var spoiled = false

    /// The connection may carry another request.
    var isReusable: Bool { !spoiled && decoder.isIdle }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !spoiled else { return }
        var incoming = unwrapInboundIn(data)
        if pending.readableBytes == 0 {
            pending = incoming
        } else {
            pending.writeBuffer(&incoming)
        }
        decodeAvailable(context: context)
        // All read: the read's storage is let go (the body parts handed on keep what they need),
        // so an idle or streaming connection does not hold its last read buffer.
        if pending.readableBytes == 0 { pending = ByteBuffer() }
    }

    /// Delivers every part the bytes at hand complete. A delegate may close the connection,
    /// release it to the pool or send the next request on it from inside `upstreamRead`.
    private func decodeAvailable(context: ChannelHandlerContext) {
        while !spoiled {
            guard decoder.awaitingAnswer, let delegate else {
                // Nothing was asked on this connection (or the request stopped listening).
                if pending.readableBytes > 0 { spoil(context, UpstreamProtocolError(reason: .unexpectedBytes)) }
                return
            }
            let part: UpstreamPart
            var following: UpstreamPart?
            do {
                guard let next = try decoder.next(&pending) else { return }
                part = next
                // One part of look-ahead after a head: body bytes that came with it and cannot be
                // read fail the try before anything reached the client (a 502, or another
                // instance) rather than start an answer that can only break off.
                if case .head = part { following = try decoder.next(&pending) }
            } catch {
                return spoil(context, error)
            }
            deliver(part, to: delegate, context: context)
            if let following {
                guard !spoiled, let delegate = self.delegate else { continue }
                deliver(following, to: delegate, context: context)
            }
        }
    }

    private func deliver(_ part: UpstreamPart, to delegate: any UpstreamDelegate, context: ChannelHandlerContext) {
        if case .end = part, pending.readableBytes > 0 {
            // More than the answer: marked before the request hears of the end, so that the pool
            // does not take the connection back (a pipelined request could be sent on it at once,
            // and read these bytes as its answer).
            spoiled = true
            pending.clear()
            delegate.upstreamRead(part)
            context.close(promise: nil)
            return
        }
        delegate.upstreamRead(part)
    }

    private func spoil(_ context: ChannelHandlerContext, _ error: any Error) {
        spoiled = true
        pending.clear()
        if closedError == nil { closedError = error }
        context.close(promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        delegate?.upstreamReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if closedError == nil { closedError = error }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A body framed by the close ends here, if nothing went wrong first.
        if closedError == nil, !spoiled, let delegate, decoder.endsAtClose, let end = decoder.endAtClose() {
            delegate.upstreamRead(end)
        }
        spoiled = true
        let delegate = self.delegate
        self.delegate = nil
        onClose?()
        onClose = nil
        delegate?.upstreamClosed(error: closedError ?? ChannelError.eof)
    }

    func read(context: ChannelHandlerContext) {
        if readPaused {
            pendingRead = true
        } else {
            context.read()
        }
    }

    /// Stop reading from the instance until `resumeReading()`.
    func pauseReading() { readPaused = true }

    func resumeReading() {
        guard readPaused else { return }
        readPaused = false
        if pendingRead, let context {
            pendingRead = false
            context.read()
        }
    }

    /// Sends a whole request: its serialized head (`Exchange.upstreamHead`) and its body in one
    /// flush (one `writev`). `answeringHEAD`: the request is a HEAD, whose answer has no body.
    func send(answeringHEAD: Bool, serializedHead: ByteBuffer, body: ByteBuffer?) {
        guard let context else { return }
        decoder.expectAnswer(toHEAD: answeringHEAD)
        if let body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(serializedHead), promise: nil)
            context.writeAndFlush(wrapOutboundOut(body), promise: nil)
        } else {
            context.writeAndFlush(wrapOutboundOut(serializedHead), promise: nil)
        }
    }

    func close() {
        context?.close(promise: nil)
    }
}

/// One keep-alive connection to an instance, owned by one event loop.
final class UpstreamConnection {
    let channel: any Channel
    let handler: UpstreamHandler
    /// The pool it returns to.
    let pool: UpstreamConnectionPool
    /// Requests completed on this connection; a reused connection may have been closed by the
    /// instance while idle, which is no fault of the instance.
    var served = 0

    init(channel: any Channel, handler: UpstreamHandler, pool: UpstreamConnectionPool) {
        self.channel = channel
        self.handler = handler
        self.pool = pool
    }
}

/// The idle keep-alive connections of one event loop to one instance address.
final class UpstreamConnectionPool {
    let address: UpstreamURL
    let eventLoop: any EventLoop
    private(set) var idle: [UpstreamConnection] = []
    private(set) var open = 0
    /// Its instance was removed: no connection is kept idle any more (`retire`).
    private(set) var retired = false
    let maxIdle: Int

    init(address: UpstreamURL, eventLoop: any EventLoop, maxIdle: Int = 128) {
        self.address = address
        self.eventLoop = eventLoop
        self.maxIdle = maxIdle
    }

    /// An idle connection if there is one (most recently used first), else `nil`.
    func takeIdle() -> UpstreamConnection? {
        while let conn = idle.popLast() {
            if conn.channel.isActive && conn.handler.isReusable { return conn }
            conn.handler.close()
        }
        return nil
    }

    /// Opens a new connection on this event loop.
    func connect(timeout: TimeAmount) -> EventLoopFuture<UpstreamConnection> {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Requests go out already serialized; answers are read by the gateway's own parsers.
                    try channel.pipeline.syncOperations.addHandler(UpstreamHandler())
                }
            }
        return bootstrap.connect(host: address.host, port: address.port).assumeIsolated().flatMapThrowing { channel in
            let handler = try channel.pipeline.syncOperations.handler(type: UpstreamHandler.self)
            let conn = UpstreamConnection(channel: channel, handler: handler, pool: self)
            self.open += 1
            // The pool held strongly until the connection closes (a weak reference would give it
            // a side table, see `ExchangeTimers`; an unowned one could outlive a pool a reload
            // removed), and the connection known by its handler, which calls this: the
            // `UpstreamConnection` may be gone by then (an answer framed by the close ends its
            // request inside `channelInactive`, and the request let it go).
            handler.onClose = { [self, unowned handler] in self.forget(handler) }
            return conn
        }.nonisolated()
    }

    /// Returns a connection after a complete response that allows keep-alive.
    func release(_ conn: UpstreamConnection) {
        conn.served += 1
        conn.handler.delegate = nil
        conn.handler.resumeReading()
        if retired || idle.count >= maxIdle || !conn.channel.isActive || !conn.handler.isReusable {
            conn.handler.close()
        } else {
            idle.append(conn)
        }
    }

    /// A connection of this pool closed.
    fileprivate func forget(_ handler: UpstreamHandler) {
        open -= 1
        idle.removeAll { $0.handler === handler }
    }

    /// The instance left the table (a reload): the idle connections close now, and those still
    /// carrying a request close when it ends instead of coming back.
    func retire() {
        retired = true
        closeAll()
    }

    func closeAll() {
        for conn in idle { conn.handler.close() }
        idle.removeAll()
    }
}
