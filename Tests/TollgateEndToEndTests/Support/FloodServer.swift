import Atomics
import NIOCore
import NIOHTTP1
import NIOPosix

/// A test upstream that answers any request with a chunked body of `totalBytes`, written only
/// while its socket is writable, and counts the bytes the kernel accepted.
final class FloodServer: Sendable {
    let channel: any Channel
    let group: MultiThreadedEventLoopGroup
    private let written: ManagedAtomic<Int>

    var port: Int { channel.localAddress!.port! }
    var bytesWritten: Int { written.load(ordering: .relaxed) }

    static func start(totalBytes: Int) async throws -> FloodServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let written = ManagedAtomic(0)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(FloodHandler(total: totalBytes, written: written))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return FloodServer(channel: channel, group: group, written: written)
    }

    private init(channel: any Channel, group: MultiThreadedEventLoopGroup, written: ManagedAtomic<Int>) {
        self.channel = channel
        self.group = group
        self.written = written
    }

    func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

private final class FloodHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let total: Int
    let written: ManagedAtomic<Int>
    var sent = 0
    var streaming = false
    let chunk = 64 * 1024

    init(total: Int, written: ManagedAtomic<Int>) {
        self.total = total
        self.written = written
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = unwrapInboundIn(data) else { return }
        let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-type": "text/event-stream", "transfer-encoding": "chunked"])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        streaming = true
        pump(context: context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pump(context: context) }
    }

    private func pump(context: ChannelHandlerContext) {
        guard streaming else { return }
        let payload = context.channel.allocator.buffer(repeating: UInt8(ascii: "x"), count: chunk)
        while context.channel.isWritable && sent < total {
            let n = min(chunk, total - sent)
            sent += n
            let counter = written
            context.write(wrapOutboundOut(.body(.byteBuffer(payload.getSlice(at: 0, length: n)!)))).whenSuccess {
                counter.wrappingIncrement(by: n, ordering: .relaxed)
            }
            context.flush()
        }
        if sent >= total {
            streaming = false
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
