import NIOCore
import NIOHTTP1
import NIOPosix

/// A test-only HTTP/1.1 client: one request per connection, every body part kept with its arrival time.
struct TestResponse: Sendable {
    var status: HTTPResponseStatus
    var headers: HTTPHeaders
    /// Body parts in arrival order (with chunked encoding, one part per chunk unless several arrive in one read).
    var parts: [(at: NIODeadline, text: String)]
    /// When the response head arrived.
    var headAt: NIODeadline
    var endedAt: NIODeadline

    var body: String { self.parts.map(\.text).joined() }

    /// The `data:` payloads of a server-sent-event body.
    var events: [String] {
        self.body.split(separator: "\n\n").compactMap { event in
            event.hasPrefix("data: ") ? String(event.dropFirst(6)) : nil
        }
    }
}

/// The connection closed before the answer was complete.
struct ConnectionCut: Error {}

enum TestHTTPClient {
    /// Sends one request to 127.0.0.1:`port` and collects the answer; with `closeAfterFirstPart`, closes
    /// the connection as soon as the first body part arrives and returns what it got.
    static func send(
        port: Int,
        method: HTTPMethod = .GET,
        path: String,
        json: String? = nil,
        closeAfterFirstPart: Bool = false,
        group: any EventLoopGroup
    ) async throws -> TestResponse {
        let promise = group.next().makePromise(of: TestResponse.self)
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "host", value: "127.0.0.1:\(port)")
        if let json {
            head.headers.add(name: "content-type", value: "application/json")
            head.headers.add(name: "content-length", value: String(json.utf8.count))
        }
        let request = head
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(
                            CollectingHandler(request: request, body: json, closeAfterFirstPart: closeAfterFirstPart, promise: promise)
                        )
                    }
                }
                .connect(host: "127.0.0.1", port: port)
                .get()
        } catch {
            promise.fail(error)
            throw error
        }
        defer { channel.close(promise: nil) }
        return try await promise.futureResult.get()
    }
}

private final class CollectingHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let request: HTTPRequestHead
    private let body: String?
    private let closeAfterFirstPart: Bool
    private let promise: EventLoopPromise<TestResponse>
    private var response: TestResponse?
    private var done = false

    init(request: HTTPRequestHead, body: String?, closeAfterFirstPart: Bool, promise: EventLoopPromise<TestResponse>) {
        self.request = request
        self.body = body
        self.closeAfterFirstPart = closeAfterFirstPart
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(self.wrapOutboundOut(.head(self.request)), promise: nil)
        if let body {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        }
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = NIODeadline.now()
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            guard head.status != .continue else { return }
            self.response = TestResponse(status: head.status, headers: head.headers, parts: [], headAt: now, endedAt: now)
        case .body(let buffer):
            self.response?.parts.append((now, String(buffer: buffer)))
            if self.closeAfterFirstPart, let response = self.response {
                self.finish(.success(response))
                context.close(promise: nil)
            }
        case .end:
            self.response?.endedAt = now
            if let response = self.response { self.finish(.success(response)) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.finish(.failure(ConnectionCut()))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.finish(.failure(error))
        context.close(promise: nil)
    }

    private func finish(_ result: Result<TestResponse, any Error>) {
        guard !self.done else { return }
        self.done = true
        self.promise.completeWith(result)
    }
}
