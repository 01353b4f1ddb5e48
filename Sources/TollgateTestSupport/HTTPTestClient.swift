import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// One answer as a test client saw it.
public struct Answer: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    /// Body parts with their arrival times (one per read from the socket; with chunked
    /// encoding, one per chunk unless several arrive in one read).
    public var parts: [(at: NIODeadline, bytes: String)]
    /// When the head arrived.
    public var headAt: NIODeadline
    /// When the end arrived.
    public var endAt: NIODeadline

    public var body: String { parts.map(\.bytes).joined() }

    public var json: [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
    }

    /// `error.code` of an OpenAI error body.
    public var errorCode: String? { (json?["error"] as? [String: Any])?["code"] as? String }
    public var errorType: String? { (json?["error"] as? [String: Any])?["type"] as? String }

    /// The `data:` payloads of an SSE body.
    public var events: [String] {
        body.components(separatedBy: "\n\n").compactMap { $0.hasPrefix("data: ") ? String($0.dropFirst(6)) : nil }
    }
}

/// The connection closed before the answer was complete.
public struct ConnectionClosed: Error {
    public init() {}
}

/// No complete answer within the client's timeout (the connection is closed then).
public struct AnswerTimedOut: Error, CustomStringConvertible {
    public var timeout: Duration
    public var description: String { "no complete answer within \(timeout)" }
}

/// One request of a pipelined batch (`HTTPTestClient.sendPipelined`).
public struct TestRequest: Sendable {
    public var method: HTTPMethod
    public var path: String
    public var body: String?
    /// Extra headers; a `content-length` here replaces the computed one (the body is then not sent).
    public var headers: [(String, String)]

    public init(_ method: HTTPMethod = .GET, _ path: String, body: String? = nil, headers: [(String, String)] = []) {
        self.method = method
        self.path = path
        self.body = body
        self.headers = headers
    }
}

/// The HTTP/1.1 test client of every test target: one keep-alive connection, requests one
/// after another (`send`) or pipelined (`sendPipelined`); every body part is kept with its
/// arrival time; a test never waits forever (each request has a timeout).
public final class HTTPTestClient: Sendable {
    public let channel: any Channel

    public static func connect(port: Int, group: any EventLoopGroup) async throws -> HTTPTestClient {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(AnswerCollector())
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return HTTPTestClient(channel: channel)
    }

    /// One request on a new connection, closed afterwards.
    public static func send(port: Int, group: any EventLoopGroup, _ method: HTTPMethod = .GET, _ path: String, body: String? = nil,
                            headers: [(String, String)] = [], abortAfterFirstPart: Bool = false,
                            timeout: Duration = .seconds(60)) async throws -> Answer {
        let client = try await connect(port: port, group: group)
        do {
            let answer = try await client.send(method, path, body: body, headers: headers, abortAfterFirstPart: abortAfterFirstPart,
                                               timeout: timeout)
            await client.close()
            return answer
        } catch {
            await client.close()
            throw error
        }
    }

    private init(channel: any Channel) { self.channel = channel }

    /// Sends a request and waits for the whole answer; `abortAfterFirstPart` closes the
    /// connection once the first body part arrived and returns what came. Past `timeout` the
    /// request fails with `AnswerTimedOut` and the connection closes.
    public func send(_ method: HTTPMethod = .POST, _ path: String, body: String? = nil, headers: [(String, String)] = [],
                     abortAfterFirstPart: Bool = false, timeout: Duration = .seconds(60)) async throws -> Answer {
        try await sendPipelined([TestRequest(method, path, body: body, headers: headers)], abortAfterFirstPart: abortAfterFirstPart,
                                timeout: timeout)[0]
    }

    /// Writes all `requests` at once (pipelined on this connection) and collects their answers
    /// in order. With `abortAfterFirstPart`, the connection closes at the first body part and the
    /// answers so far are returned (the last one partial).
    public func sendPipelined(_ requests: [TestRequest], abortAfterFirstPart: Bool = false,
                              timeout: Duration = .seconds(60)) async throws -> [Answer] {
        precondition(!requests.isEmpty)
        let promise = channel.eventLoop.makePromise(of: [Answer].self)
        let batch = PendingBatch(requests: requests.map(Self.head), bodies: requests.map(Self.sentBody),
                                 abortAfterFirstPart: abortAfterFirstPart, promise: promise)
        let channel = self.channel
        let deadline = channel.eventLoop.scheduleTask(in: timeAmount(timeout)) {
            promise.fail(AnswerTimedOut(timeout: timeout))  // ignored when the answers came first
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in deadline.cancel() }
        channel.writeAndFlush(batch).cascadeFailure(to: promise)
        return try await promise.futureResult.get()
    }

    public func close() async { try? await channel.close() }

    /// Convenience: a chat completion with a department key.
    public func chat(key: String?, model: String = "qwen2.5-0.5b-instruct", content: String = "hello", extra: String = "",
                     stream: Bool = false, headers: [(String, String)] = []) async throws -> Answer {
        var h = headers
        if let key { h.append(("authorization", "Bearer \(key)")) }
        let body = #"{"model":"\#(model)","messages":[{"role":"user","content":"\#(content)"}]\#(stream ? #","stream":true"# : "")\#(extra)}"#
        return try await send(.POST, "/v1/chat/completions", body: body, headers: h)
    }

    private static func declaresLength(_ request: TestRequest) -> Bool {
        request.headers.contains { $0.0.lowercased() == "content-length" }
    }

    private static func head(_ request: TestRequest) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: request.method, uri: request.path)
        if !request.headers.contains(where: { $0.0.lowercased() == "host" }) { head.headers.add(name: "host", value: "127.0.0.1") }
        for (n, v) in request.headers { head.headers.add(name: n, value: v) }
        if let body = request.body {
            if !head.headers.contains(name: "content-type") { head.headers.add(name: "content-type", value: "application/json") }
            if !declaresLength(request) { head.headers.add(name: "content-length", value: String(body.utf8.count)) }
        }
        return head
    }

    /// The body sent: none when the test declared its own length (a body that never comes).
    private static func sentBody(_ request: TestRequest) -> String? {
        declaresLength(request) ? nil : request.body
    }
}

struct PendingBatch: Sendable {
    var requests: [HTTPRequestHead]
    var bodies: [String?]
    var abortAfterFirstPart: Bool
    var promise: EventLoopPromise<[Answer]>
}

private final class AnswerCollector: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = PendingBatch
    typealias OutboundOut = HTTPClientRequestPart

    private var pending: PendingBatch?
    private var answers: [Answer] = []
    private var answer: Answer?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let batch = unwrapOutboundIn(data)
        pending = batch
        answers = []
        answer = nil
        for (head, body) in zip(batch.requests, batch.bodies) {
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            if let body {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            }
            context.write(wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.flush()
        promise?.succeed()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = NIODeadline.now()
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard !(100..<200).contains(head.status.code) else { return }  // 1xx: the real head follows
            answer = Answer(status: Int(head.status.code), headers: head.headers, parts: [], headAt: now, endAt: now)
        case .body(let buffer):
            answer?.parts.append((now, String(buffer: buffer)))
            if pending?.abortAfterFirstPart == true, let a = answer, let p = pending {
                pending = nil
                answer = nil
                p.promise.succeed(answers + [a])
                context.close(promise: nil)
            }
        case .end:
            if var a = answer, let p = pending {
                a.endAt = now
                answer = nil
                answers.append(a)
                if answers.count == p.requests.count {
                    pending = nil
                    p.promise.succeed(answers)
                }
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        pending?.promise.fail(ConnectionClosed())
        pending = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        pending?.promise.fail(error)
        pending = nil
        context.close(promise: nil)
    }
}

/// Raw TCP for misbehaving clients: write what you like, read until the server closes.
public final class RawTestClient: Sendable {
    public let channel: any Channel
    private let received: EventLoopPromise<String>

    public static func connect(port: Int, group: any EventLoopGroup) async throws -> RawTestClient {
        let loop = group.next()
        let promise = loop.makePromise(of: String.self)
        let channel = try await ClientBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RawCollector(promise: promise))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawTestClient(channel: channel, received: promise)
    }

    private init(channel: any Channel, received: EventLoopPromise<String>) {
        self.channel = channel
        self.received = received
    }

    public func write(_ text: String) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(string: text))
    }

    /// Everything the server sent, once it closed the connection; past `timeout` the
    /// connection is closed by the client instead and `AnswerTimedOut` thrown.
    public func readUntilClosed(timeout: Duration = .seconds(30)) async throws -> String {
        let received = self.received
        let channel = self.channel
        let deadline = channel.eventLoop.scheduleTask(in: timeAmount(timeout)) {
            received.fail(AnswerTimedOut(timeout: timeout))
            channel.close(promise: nil)
        }
        received.futureResult.whenComplete { _ in deadline.cancel() }
        return try await received.futureResult.get()
    }

    public var isActive: Bool { channel.isActive }
}

private final class RawCollector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<String>
    var text = ""
    init(promise: EventLoopPromise<String>) { self.promise = promise }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        text += String(buffer: unwrapInboundIn(data))
    }
    func channelInactive(context: ChannelHandlerContext) { promise.succeed(text) }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

/// A `Duration` as NIO's `TimeAmount`.
public func timeAmount(_ duration: Duration) -> TimeAmount {
    .nanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
}
