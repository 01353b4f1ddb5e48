import NIOCore
import NIOHTTP1
import NIOPosix

/// The smallest HTTP/1.1 forwarder SwiftNIO allows: NIO's server and client codecs and one
/// pool of keep-alive upstream connections per event loop, and nothing else — no
/// authentication, routing, quotas, metering, timeouts, retries or error handling.
///
/// It is a measuring stick, not a proxy to use: `scripts/bench` runs it beside nginx and the
/// gateway so that every run shows what forwarding alone costs on SwiftNIO on that machine,
/// and so how much of the gateway's cost is its own work (`tollgate reference-proxy`).
public enum ReferenceProxy {
    /// Listens on `host:port` and forwards every request to `upstreamHost:upstreamPort`.
    /// Returns the listening channel; close it to stop.
    public static func start(host: String, port: Int, upstreamHost: String, upstreamPort: Int,
                             group: MultiThreadedEventLoopGroup) async throws -> any Channel {
        let upstream = Upstream(host: upstreamHost, port: upstreamPort)
        var pools: [ObjectIdentifier: NIOLoopBound<Pool>] = [:]
        for loop in group.makeIterator() {
            pools[ObjectIdentifier(loop)] = try await loop.submit { NIOLoopBound(Pool(), eventLoop: loop) }.get()
        }
        let byLoop = pools
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false)
                    guard let pool = byLoop[ObjectIdentifier(channel.eventLoop)]?.value else { throw ChannelError.ioOnClosedChannel }
                    try channel.pipeline.syncOperations.addHandler(ClientSide(upstream: upstream, pool: pool))
                }
            }
            .bind(host: host, port: port).get()
    }

    struct Upstream: Sendable {
        let host: String
        let port: Int
    }

    /// One event loop's idle upstream connections.
    final class Pool {
        var idle: [(any Channel, UpstreamSide)] = []
    }

    /// Relays one upstream connection's response parts to the request using it.
    final class UpstreamSide: ChannelInboundHandler {
        typealias InboundIn = HTTPClientResponsePart
        var onPart: ((HTTPClientResponsePart) -> Void)?
        var onReadComplete: (() -> Void)?

        func channelRead(context: ChannelHandlerContext, data: NIOAny) { onPart?(unwrapInboundIn(data)) }
        func channelReadComplete(context: ChannelHandlerContext) { onReadComplete?() }
    }

    /// A client connection: collects a request, sends it on an upstream connection and streams
    /// the answer back.
    final class ClientSide: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let upstream: Upstream
        let pool: Pool
        private var head: HTTPRequestHead?
        private var body: ByteBuffer?

        init(upstream: Upstream, pool: Pool) {
            self.upstream = upstream
            self.pool = pool
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h):
                head = h
                body = nil
            case .body(var chunk):
                if body == nil { body = chunk } else { body!.writeBuffer(&chunk) }
            case .end:
                guard var request = head else { return }
                request.headers.replaceOrAdd(name: "host", value: "\(upstream.host):\(upstream.port)")
                let body = self.body
                if let (channel, side) = pool.idle.popLast() {
                    send(request, body, on: channel, side, context: context)
                    return
                }
                let side = UpstreamSide()
                ClientBootstrap(group: context.eventLoop)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHTTPClientHandlers()
                            try channel.pipeline.syncOperations.addHandler(side)
                        }
                    }
                    .connect(host: upstream.host, port: upstream.port).assumeIsolated().whenComplete { result in
                        switch result {
                        case .success(let channel): self.send(request, body, on: channel, side, context: context)
                        case .failure: context.close(promise: nil)
                        }
                    }
            }
        }

        private func send(_ request: HTTPRequestHead, _ body: ByteBuffer?, on channel: any Channel, _ side: UpstreamSide,
                          context: ChannelHandlerContext) {
            side.onPart = { part in
                switch part {
                case .head(let response):
                    var head = HTTPResponseHead(version: .http1_1, status: response.status, headers: response.headers)
                    head.headers.remove(name: "connection")
                    context.write(self.wrapOutboundOut(.head(head)), promise: nil)
                case .body(let chunk):
                    context.write(self.wrapOutboundOut(.body(.byteBuffer(chunk))), promise: nil)
                case .end:
                    side.onPart = nil
                    side.onReadComplete = nil
                    self.pool.idle.append((channel, side))
                    context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
                }
            }
            side.onReadComplete = { context.flush() }
            let sync = channel.pipeline.syncOperations
            sync.write(NIOAny(HTTPClientRequestPart.head(request)), promise: nil)
            if let body { sync.write(NIOAny(HTTPClientRequestPart.body(.byteBuffer(body))), promise: nil) }
            sync.writeAndFlush(NIOAny(HTTPClientRequestPart.end(nil)), promise: nil)
        }
    }
}
