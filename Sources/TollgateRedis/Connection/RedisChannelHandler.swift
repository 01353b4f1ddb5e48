import NIOCore

/// Parses replies off one channel and hands them to its `RedisConnection`.
///
/// Thin by design: the queue of waiting commands, timeouts and reconnects live in the
/// connection; the handler only knows its connection attempt's `generation` so that events
/// from an abandoned channel are ignored.
final class RedisChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let connection: RedisConnection
    private let generation: UInt64
    private let reader = RESPReader()
    private var failed = false

    init(connection: RedisConnection, generation: UInt64) {
        self.connection = connection
        self.generation = generation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let buffer = unwrapInboundIn(data)
        do {
            try reader.feed(buffer)
            while let value = try reader.next() {
                guard connection.received(value, generation: generation) else {
                    failed = true
                    return
                }
            }
        } catch {
            failed = true
            let reason = (error as? RedisError).map { $0.message } ?? "\(error)"
            connection.channelFailed(reason: reason, generation: generation)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.channelFailed(reason: "connection closed by Redis", generation: generation)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let reason = (error as? IOError)?.description ?? "\(error)"
        connection.channelFailed(reason: reason, generation: generation)
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension RedisChannelHandler: Sendable {}
