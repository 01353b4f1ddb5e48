import NIOCore
import NIOHTTP1
import NIOPosix

/// A test-only HTTP/1.1 client: every body part is kept with its arrival time.
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

/// One request for `TestHTTPClient`.
struct TestRequest: Sendable {
    var method: HTTPMethod = .GET
    var path: String
    var json: String?
    /// Extra headers; a `content-length` here replaces the computed one (the body is then not sent).
    var headers: [(String, String)] = []
}

/// The connection closed before the answers were complete.
struct ConnectionCut: Error {}

enum TestHTTPClient {
    /// Sends one request to 127.0.0.1:`port` on a new connection and collects the answer; with
    /// `closeAfterFirstPart`, closes the connection as soon as the first body part arrives and returns what it got.
    static func send(
        port: Int,
        method: HTTPMethod = .GET,
        path: String,
        json: String? = nil,
        headers: [(String, String)] = [],
        closeAfterFirstPart: Bool = false,
        group: any EventLoopGroup
    ) async throws -> TestResponse {
        let request = TestRequest(method: method, path: path, json: json, headers: headers)
        let responses = try await self.send(port: port, requests: [request], closeAfterFirstPart: closeAfterFirstPart, group: group)
        return responses[0]
    }

    /// Sends all `requests` at once, pipelined on one keep-alive connection, and collects their answers in order.
    static func send(
        port: Int,
        requests: [TestRequest],
        closeAfterFirstPart: Bool = false,
        group: any EventLoopGroup
    ) async throws -> [TestResponse] {
        let promise = group.next().makePromise(of: [TestResponse].self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(
                            CollectingHandler(port: port, requests: requests, closeAfterFirstPart: closeAfterFirstPart, promise: promise)
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

    private let port: Int
    private let requests: [TestRequest]
    private let closeAfterFirstPart: Bool
    private let promise: EventLoopPromise<[TestResponse]>
    private var responses: [TestResponse] = []
    private var current: TestResponse?
    private var done = false

    init(port: Int, requests: [TestRequest], closeAfterFirstPart: Bool, promise: EventLoopPromise<[TestResponse]>) {
        self.port = port
        self.requests = requests
        self.closeAfterFirstPart = closeAfterFirstPart
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        for request in self.requests {
            var head = HTTPRequestHead(version: .http1_1, method: request.method, uri: request.path)
            head.headers.add(name: "host", value: "127.0.0.1:\(self.port)")
            let declaresLength = request.headers.contains { $0.0.lowercased() == "content-length" }
            for (name, value) in request.headers { head.headers.add(name: name, value: value) }
            if let json = request.json {
                head.headers.add(name: "content-type", value: "application/json")
                if !declaresLength { head.headers.add(name: "content-length", value: String(json.utf8.count)) }
            }
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            if let json = request.json, !declaresLength {
                context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: json)))), promise: nil)
            }
            context.write(self.wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.flush()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = NIODeadline.now()
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            guard !(100..<200).contains(head.status.code) else { return }  // 1xx: the real head follows
            self.current = TestResponse(status: head.status, headers: head.headers, parts: [], headAt: now, endedAt: now)
        case .body(let buffer):
            self.current?.parts.append((now, String(buffer: buffer)))
            if self.closeAfterFirstPart, let current = self.current {
                self.finish(.success(self.responses + [current]))
                context.close(promise: nil)
            }
        case .end:
            guard var response = self.current else { return }
            self.current = nil
            response.endedAt = now
            self.responses.append(response)
            if self.responses.count == self.requests.count { self.finish(.success(self.responses)) }
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

    private func finish(_ result: Result<[TestResponse], any Error>) {
        guard !self.done else { return }
        self.done = true
        self.promise.completeWith(result)
    }
}
