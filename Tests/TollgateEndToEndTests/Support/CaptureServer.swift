import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A test upstream that records each request exactly as it arrived on the wire (head and body
/// bytes) and answers it with a fixed chat completion framed by content-length.
final class CaptureServer: Sendable {
    let channel: any Channel
    let group: MultiThreadedEventLoopGroup
    private let captured: NIOLockedValueBox<[String]>

    var port: Int { channel.localAddress!.port! }
    /// Every request received, as text: head and body.
    var requests: [String] { captured.withLockedValue { $0 } }

    static let answer = #"{"id":"chatcmpl-capture","object":"chat.completion","created":1,"model":"qwen2.5-0.5b-instruct","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#

    /// `answer`: the whole response to send to every request (default: `answer`, framed by
    /// length); `closeAfter`: close the connection after it (an answer ended by the close).
    static func start(answer: String? = nil, closeAfter: Bool = false) async throws -> CaptureServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let captured = NIOLockedValueBox<[String]>([])
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(CaptureHandler(captured: captured, answer: answer, closeAfter: closeAfter))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return CaptureServer(channel: channel, group: group, captured: captured)
    }

    private init(channel: any Channel, group: MultiThreadedEventLoopGroup, captured: NIOLockedValueBox<[String]>) {
        self.channel = channel
        self.group = group
        self.captured = captured
    }

    func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

private final class CaptureHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let captured: NIOLockedValueBox<[String]>
    let answer: String
    let closeAfter: Bool
    private var pending: [UInt8] = []

    init(captured: NIOLockedValueBox<[String]>, answer: String?, closeAfter: Bool) {
        self.captured = captured
        self.closeAfter = closeAfter
        let body = CaptureServer.answer
        self.answer = answer ?? "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        pending += buffer.readBytes(length: buffer.readableBytes) ?? []
        // Whole requests only: a head, then as many body bytes as its content-length says.
        while let headEnd = Self.endOfHead(pending) {
            let head = String(decoding: pending[..<headEnd], as: UTF8.self).lowercased()
            let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                .flatMap { Int($0.dropFirst("content-length:".count).filter { $0 != " " }) } ?? 0
            let total = headEnd + 4 + length
            guard pending.count >= total else { return }
            captured.withLockedValue { $0.append(String(decoding: pending[..<total], as: UTF8.self)) }
            pending.removeFirst(total)
            let written = context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: answer)))
            if closeAfter {
                written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                return
            }
        }
    }

    /// Where the blank line ending the head starts.
    private static func endOfHead(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            return i
        }
        return nil
    }
}
