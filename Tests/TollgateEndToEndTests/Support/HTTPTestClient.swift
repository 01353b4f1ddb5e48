import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// One answer as the client saw it.
struct Answer: Sendable {
    var status: Int
    var headers: HTTPHeaders
    /// Body parts with their arrival times (one per read from the socket).
    var parts: [(at: NIODeadline, bytes: String)]
    var headAt: NIODeadline
    var endAt: NIODeadline

    var body: String { parts.map(\.bytes).joined() }

    var json: [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
    }

    /// `error.code` of an OpenAI error body.
    var errorCode: String? { (json?["error"] as? [String: Any])?["code"] as? String }
    var errorType: String? { (json?["error"] as? [String: Any])?["type"] as? String }

    /// The `data:` payloads of an SSE body.
    var events: [String] {
        body.components(separatedBy: "\n\n").compactMap { $0.hasPrefix("data: ") ? String($0.dropFirst(6)) : nil }
    }
}

struct ConnectionClosed: Error {}

/// No complete answer within the client's timeout (the connection is closed then).
struct AnswerTimedOut: Error, CustomStringConvertible {
    var timeout: Duration
    var description: String { "no complete answer within \(timeout)" }
}

/// A keep-alive HTTP/1.1 test client: one connection, requests one after another.
final class HTTPTestClient: Sendable {
    let channel: any Channel

    static func connect(port: Int, group: any EventLoopGroup) async throws -> HTTPTestClient {
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

    private init(channel: any Channel) { self.channel = channel }

    /// Sends a request and waits for the whole answer; `abortAfterFirstPart` closes the
    /// connection once the first body part arrived and returns what came. A test never waits
    /// forever: past `timeout` the request fails with `AnswerTimedOut` and the connection closes.
    func send(_ method: HTTPMethod = .POST, _ path: String, body: String? = nil, headers: [(String, String)] = [],
              abortAfterFirstPart: Bool = false, timeout: Duration = .seconds(60)) async throws -> Answer {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        if !headers.contains(where: { $0.0.lowercased() == "host" }) { head.headers.add(name: "host", value: "127.0.0.1") }
        for (n, v) in headers { head.headers.add(name: n, value: v) }
        if let body {
            if !head.headers.contains(name: "content-type") { head.headers.add(name: "content-type", value: "application/json") }
            head.headers.add(name: "content-length", value: String(body.utf8.count))
        }
        let promise = channel.eventLoop.makePromise(of: Answer.self)
        let request = PendingRequest(head: head, body: body, abortAfterFirstPart: abortAfterFirstPart, promise: promise)
        let channel = self.channel
        let deadline = channel.eventLoop.scheduleTask(in: timeAmount(timeout)) {
            promise.fail(AnswerTimedOut(timeout: timeout))  // ignored when the answer came first
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in deadline.cancel() }
        channel.writeAndFlush(request).cascadeFailure(to: promise)
        return try await promise.futureResult.get()
    }

    func close() async { try? await channel.close() }

    /// Convenience: a chat completion with a department key.
    func chat(key: String?, model: String = "qwen2.5-0.5b-instruct", content: String = "hello", extra: String = "",
              stream: Bool = false, headers: [(String, String)] = []) async throws -> Answer {
        var h = headers
        if let key { h.append(("authorization", "Bearer \(key)")) }
        let body = #"{"model":"\#(model)","messages":[{"role":"user","content":"\#(content)"}]\#(stream ? #","stream":true"# : "")\#(extra)}"#
        return try await send(.POST, "/v1/chat/completions", body: body, headers: h)
    }
}

struct PendingRequest: Sendable {
    var head: HTTPRequestHead
    var body: String?
    var abortAfterFirstPart: Bool
    var promise: EventLoopPromise<Answer>
}

private final class AnswerCollector: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = PendingRequest
    typealias OutboundOut = HTTPClientRequestPart

    private var pending: PendingRequest?
    private var answer: Answer?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        pending = request
        context.write(wrapOutboundOut(.head(request.head)), promise: nil)
        if let body = request.body {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        }
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = NIODeadline.now()
        switch unwrapInboundIn(data) {
        case .head(let head):
            answer = Answer(status: Int(head.status.code), headers: head.headers, parts: [], headAt: now, endAt: now)
        case .body(let buffer):
            answer?.parts.append((now, String(buffer: buffer)))
            if pending?.abortAfterFirstPart == true, let a = answer, let p = pending {
                pending = nil
                answer = nil
                p.promise.succeed(a)
                context.close(promise: nil)
            }
        case .end:
            if var a = answer, let p = pending {
                a.endAt = now
                pending = nil
                answer = nil
                p.promise.succeed(a)
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
final class RawTestClient: Sendable {
    let channel: any Channel
    private let received: EventLoopPromise<String>

    static func connect(port: Int, group: any EventLoopGroup) async throws -> RawTestClient {
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

    func write(_ text: String) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(string: text))
    }

    /// Everything the server sent, once it closed the connection; past `timeout` the
    /// connection is closed by the client instead and `AnswerTimedOut` thrown.
    func readUntilClosed(timeout: Duration = .seconds(30)) async throws -> String {
        let received = self.received
        let channel = self.channel
        let deadline = channel.eventLoop.scheduleTask(in: timeAmount(timeout)) {
            received.fail(AnswerTimedOut(timeout: timeout))
            channel.close(promise: nil)
        }
        received.futureResult.whenComplete { _ in deadline.cancel() }
        return try await received.futureResult.get()
    }

    var isActive: Bool { channel.isActive }
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
func timeAmount(_ duration: Duration) -> TimeAmount {
    .nanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
}
