import NIOCore
import NIOPosix
import TollgateCore

/// The forwarder below NIO's HTTP codecs: one raw-`ByteBuffer` handler per client connection,
/// the gateway's strict head parser (`RequestHeadParser`; `Content-Length` bodies only), the
/// head's bytes forwarded as they came plus `X-Forwarded-For`, one upstream keep-alive
/// connection per client connection, answers passed through as bytes, one coalesced write per
/// direction per read.
///
/// Like `ReferenceProxy`, a measuring stick (`tollgate reference-proxy --raw`): `scripts/bench`
/// runs it beside nginx, the NIOHTTP1 forwarder and the gateway, so every run shows what a
/// SwiftNIO forwarder without HTTP codecs costs on that machine — the floor of a raw-bytes
/// data plane. No authentication, routing, timeouts, retries, chunked bodies or error answers
/// beyond 400 and a close.
public enum RawReferenceProxy {
    public static func start(host: String, port: Int, upstreamHost: String, upstreamPort: Int,
                             group: MultiThreadedEventLoopGroup) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ClientSide(upstreamHost: upstreamHost, upstreamPort: upstreamPort,
                                   forwardedFor: channel.remoteAddress?.ipAddress ?? "unknown"))
                }
            }
            .bind(host: host, port: port).get()
    }

    /// One client connection and its upstream connection.
    final class ClientSide: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        private let upstreamHost: String
        private let upstreamPort: Int
        private let forwardedFor: [UInt8]
        private var parser = RequestHeadParser(limits: .init())
        /// Client bytes not yet forwarded (a head or body still arriving).
        private var pending: ByteBuffer?
        /// Requests ready for the upstream, coalesced until the read ends.
        private var outgoing: ByteBuffer?
        private var upstream: (any Channel)?
        private var connecting = false
        private var context: ChannelHandlerContext?

        init(upstreamHost: String, upstreamPort: Int, forwardedFor: String) {
            self.upstreamHost = upstreamHost
            self.upstreamPort = upstreamPort
            self.forwardedFor = Array("x-forwarded-for: \(forwardedFor)\r\n\r\n".utf8)
        }

        func handlerAdded(context: ChannelHandlerContext) { self.context = context }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            if pending == nil {
                pending = bytes
            } else {
                pending!.writeBuffer(&bytes)
            }
            forwardComplete(context)
        }

        /// Moves every complete request of `pending` to `outgoing`: the head without its last
        /// CRLF, `X-Forwarded-For` and the CRLF, then the body.
        private func forwardComplete(_ context: ChannelHandlerContext) {
            while var buffer = pending, buffer.readableBytes > 0 {
                let head: RequestHead?
                do {
                    head = try buffer.withUnsafeReadableBytes { bytes throws(RequestHeadError) in try parser.parse(bytes) }
                } catch {
                    return refuse(context)
                }
                guard let head else { return }
                let bodyLength: Int
                switch head.framing {
                case .none: bodyLength = 0
                case .contentLength(let n): bodyLength = n
                case .chunked: return refuse(context)
                }
                guard buffer.readableBytes >= head.length + bodyLength else {
                    parser.reset()  // the head is read again when the body has arrived
                    return
                }
                var out = outgoing ?? context.channel.allocator.buffer(capacity: buffer.readableBytes + forwardedFor.count)
                var headBytes = buffer.readSlice(length: head.length)!
                headBytes.moveWriterIndex(to: headBytes.writerIndex - 2)
                out.writeBuffer(&headBytes)
                out.writeBytes(forwardedFor)
                if bodyLength > 0 {
                    var body = buffer.readSlice(length: bodyLength)!
                    out.writeBuffer(&body)
                }
                outgoing = out
                pending = buffer.readableBytes > 0 ? buffer : nil
            }
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            guard let out = outgoing else { return }
            if let upstream {
                outgoing = nil
                upstream.writeAndFlush(out, promise: nil)
            } else if !connecting {
                connecting = true
                let client = NIOLoopBound(self, eventLoop: context.eventLoop)
                ClientBootstrap(group: context.eventLoop)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(UpstreamSide(client: client.value))
                        }
                    }
                    .connect(host: upstreamHost, port: upstreamPort)
                    .assumeIsolated().whenComplete { result in
                        let this = client.value
                        switch result {
                        case .success(let channel):
                            this.upstream = channel
                            if let out = this.outgoing {
                                this.outgoing = nil
                                channel.writeAndFlush(out, promise: nil)
                            }
                        case .failure:
                            this.context?.close(promise: nil)
                        }
                    }
            }
        }

        /// Bytes of answers from the upstream, coalesced by the upstream's read.
        func answer(_ bytes: ByteBuffer) { context?.write(wrapOutboundOut(bytes), promise: nil) }
        func answersRead() { context?.flush() }

        private func refuse(_ context: ChannelHandlerContext) {
            pending = nil
            let refusal = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: refusal))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            upstream?.close(promise: nil)
            upstream = nil
            self.context = nil
        }
    }

    /// The upstream connection: answers passed through to the client as they arrive, bytes as
    /// they are (one upstream connection per client connection keeps them in order).
    final class UpstreamSide: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer

        private weak var client: ClientSide?

        init(client: ClientSide) { self.client = client }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) { client?.answer(unwrapInboundIn(data)) }

        func channelReadComplete(context: ChannelHandlerContext) { client?.answersRead() }
    }
}
