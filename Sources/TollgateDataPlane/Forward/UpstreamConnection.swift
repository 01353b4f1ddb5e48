import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore

/// What an upstream connection reports to the request that currently uses it.
protocol UpstreamDelegate: AnyObject {
    func upstreamRead(_ part: HTTPClientResponsePart)
    func upstreamReadComplete()
    /// The connection closed or failed while this delegate was attached.
    func upstreamClosed(error: (any Error)?)
}

/// The last handler of a keep-alive connection to one instance. It relays response parts to
/// the attached request and holds reads while the client cannot take more (backpressure, as
/// swift-nio-examples' `GlueHandler`).
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    weak var delegate: (any UpstreamDelegate)?
    /// Called once when the connection closes, so that the pool forgets it.
    var onClose: (() -> Void)?
    private var context: ChannelHandlerContext?
    private var readPaused = false
    private var pendingRead = false
    private var closedError: (any Error)?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let delegate else {
            // Nothing was asked on this connection: bytes past an answer's end (more than its
            // `content-length`, or a second answer) would become the next request's answer.
            // The connection is not to be trusted again.
            context.close(promise: nil)
            return
        }
        delegate.upstreamRead(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        delegate?.upstreamReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        closedError = error
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
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

    /// Sends a whole request: its serialized head (see `UpstreamRequestWriter`), the body, one
    /// flush. `method` tells the response decoder what the answer is to (a HEAD has no body).
    func send(method: HTTPMethod, serializedHead: ByteBuffer, body: ByteBuffer?) {
        guard let context else { return }
        // The decoder between here and the writer notes the head; the writer sends the bytes.
        context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: method, uri: ""))),
                      promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(serializedHead))), promise: nil)
        if let body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func close() {
        context?.close(promise: nil)
    }
}

/// Stands where NIO's `HTTPRequestEncoder` would on an upstream connection. The gateway writes
/// its requests' heads as bytes (`Exchange.upstreamHead`, straight from the client's parsed
/// headers) and always frames bodies by `content-length`, so there is nothing to encode: the
/// `.head` part only carries the method to NIO's response decoder, which needs it, and is not
/// written; body parts — the serialized head, then the body — go out as they are.
final class UpstreamRequestWriter: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = ByteBuffer

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head:
            promise?.succeed(())
        case .body(.byteBuffer(let buffer)):
            context.write(wrapOutboundOut(buffer), promise: promise)
        case .body(.fileRegion):
            promise?.fail(ChannelError.operationUnsupported)
        case .end:
            promise?.succeed(())
        }
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
    let maxIdle: Int

    init(address: UpstreamURL, eventLoop: any EventLoop, maxIdle: Int = 128) {
        self.address = address
        self.eventLoop = eventLoop
        self.maxIdle = maxIdle
    }

    /// An idle connection if there is one (most recently used first), else `nil`.
    func takeIdle() -> UpstreamConnection? {
        while let conn = idle.popLast() {
            if conn.channel.isActive { return conn }
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
                    // NIO's response decoder; requests go out already serialized (`UpstreamRequestWriter`).
                    try channel.pipeline.syncOperations.addHandlers([
                        UpstreamRequestWriter(), ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)),
                        UpstreamHandler(),
                    ])
                }
            }
        return bootstrap.connect(host: address.host, port: address.port).assumeIsolated().flatMapThrowing { channel in
            let handler = try channel.pipeline.syncOperations.handler(type: UpstreamHandler.self)
            let conn = UpstreamConnection(channel: channel, handler: handler, pool: self)
            self.open += 1
            handler.onClose = { [weak self, unowned conn] in
                guard let self else { return }
                self.open -= 1
                self.idle.removeAll { $0 === conn }
            }
            return conn
        }.nonisolated()
    }

    /// Returns a connection after a complete response that allows keep-alive.
    func release(_ conn: UpstreamConnection) {
        conn.served += 1
        conn.handler.delegate = nil
        conn.handler.resumeReading()
        if idle.count >= maxIdle || !conn.channel.isActive {
            conn.handler.close()
        } else {
            idle.append(conn)
        }
    }

    func closeAll() {
        for conn in idle { conn.handler.close() }
        idle.removeAll()
    }
}
