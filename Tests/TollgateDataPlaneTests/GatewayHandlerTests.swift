import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import TollgateCore
import XCTest

@testable import TollgateDataPlane

/// The client connection's handlers on an `EmbeddedChannel`: bytes in, bytes out, time moved by
/// hand. No socket, no instance: the steps that answer locally, framing and pipelining, holding
/// reads and the body timer.
final class GatewayHandlerTests: XCTestCase {
    let key = "tg-embedded-test"
    var threadPool: NIOThreadPool?

    override func tearDown() async throws {
        try await threadPool?.shutdownGracefully()
    }

    func connection(configure: (inout GatewayConfiguration) -> Void = { _ in }) throws -> EmbeddedChannel {
        var config = GatewayConfiguration()
        config.pools = [PoolConfiguration(name: "qwen", models: ["qwen2.5-0.5b-instruct"], instances: [
            InstanceConfiguration(name: "qwen-0", url: UpstreamURL(host: "127.0.0.1", port: 9)),
        ])]
        config.departments = [DepartmentConfiguration(name: "engineering", keys: [KeyEntry(sha256: KeyDigest.hex(of: key), label: "t")])]
        configure(&config)
        let channel = EmbeddedChannel()
        var logger = Logger(label: "tollgate-embedded-test")
        logger.logLevel = .critical
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        threadPool = pool
        let table = RoutingTable(configuration: config)
        let publisher = SnapshotPublisher(table: table, eventLoop: channel.embeddedEventLoop, logger: logger)
        let monitor = HealthMonitor(table: table, publisher: publisher, clock: { 0 }, logger: logger)
        let loop = LoopContext(eventLoop: channel.embeddedEventLoop, index: 0, loopCount: 1, monitor: monitor, counters: LoopCounters(),
                               logger: logger, clock: { 0 }, usageSink: nil, usageReporter: nil, threadPool: pool)
        try channel.pipeline.syncOperations.addHandler(
            GatewayHandler(loop: loop, idleTimeout: .seconds(75), headerTimeout: .seconds(10), remoteAddress: "192.0.2.1",
                           limits: config.limits, inboundCap: 64 * 1024))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    func send(_ channel: EmbeddedChannel, _ text: String) throws {
        try channel.writeInbound(ByteBuffer(string: text))
    }

    func output(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        return text
    }

    /// Splits answers written back to back by their `content-length`, HEAD answers having none.
    func answers(_ text: String, methods: [String]) -> [(head: String, body: String)] {
        var rest = Substring(text)
        var out: [(String, String)] = []
        for method in methods {
            guard let end = rest.range(of: "\r\n\r\n") else { break }
            let head = String(rest[..<end.lowerBound])
            rest = rest[end.upperBound...]
            let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
            let take = method == "HEAD" ? 0 : length
            out.append((head, String(rest.prefix(take))))
            rest = rest.dropFirst(take)
        }
        XCTAssertEqual(rest, "", "nothing after the answers")
        return out
    }

    func testPipelinedHeadAndGetAreFramedForTheirOwnMethods() throws {
        let channel = try connection()
        try send(channel, "HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\nHEAD /nowhere HTTP/1.1\r\nhost: x\r\n\r\n")
        let got = answers(try output(channel), methods: ["HEAD", "GET", "HEAD"])
        XCTAssertEqual(got.count, 3)
        XCTAssertTrue(got[0].head.contains("content-length:"), got[0].head)
        XCTAssertEqual(got[0].body, "")
        XCTAssertTrue(got[1].body.hasPrefix("{\"status\""), got[1].body)
        XCTAssertTrue(got[2].head.hasPrefix("HTTP/1.1 404"), got[2].head)
        XCTAssertTrue(channel.isActive)
    }

    func testLocalAnswersAndRefusals() throws {
        let channel = try connection()
        try send(channel, "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(key)\r\n\r\n")
        let models = answers(try output(channel), methods: ["GET"])
        XCTAssertTrue(models[0].body.contains("\"id\":\"qwen2.5-0.5b-instruct\""), models[0].body)
        let body = #"{"model":"qwen2.5-0.5b-instruct"}"#
        try send(channel, "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)")
        let refused = answers(try output(channel), methods: ["POST"])
        XCTAssertTrue(refused[0].head.hasPrefix("HTTP/1.1 401"), refused[0].head)
        XCTAssertTrue(refused[0].body.contains("invalid_api_key"))
        let bad = #"{"model":"qwen2.5-0.5b-instruct","max_tokens":-1}"#
        try send(channel, "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(key)\r\ncontent-length: \(bad.utf8.count)\r\n\r\n\(bad)")
        let invalid = answers(try output(channel), methods: ["POST"])
        XCTAssertTrue(invalid[0].head.hasPrefix("HTTP/1.1 400"), invalid[0].head)
        XCTAssertTrue(invalid[0].body.contains("\"param\":\"max_tokens\""), invalid[0].body)
        XCTAssertTrue(channel.isActive, "refusals keep the connection")
    }

    func testNothingIsAnsweredWhileTheClientDoesNotRead() throws {
        let channel = try connection()
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        try send(channel, "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        XCTAssertEqual(try output(channel), "", "held while the client cannot take more")
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        XCTAssertEqual(answers(try output(channel), methods: ["GET"]).count, 1, "answered once it can")
    }

    func testABodyThatNeverEndsGets408AndAClose() throws {
        let channel = try connection { $0.limits.bodyTimeout = .seconds(5) }
        // The handler's deadlines are real `NIODeadline`s: the embedded loop's clock is moved to them.
        let start = NIODeadline.now()
        try send(channel, "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"mod")
        channel.embeddedEventLoop.advanceTime(to: start + .seconds(4))
        XCTAssertEqual(try output(channel), "")
        channel.embeddedEventLoop.advanceTime(to: start + .seconds(6))
        let text = try output(channel)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 408"), text)
        XCTAssertTrue(text.contains("connection: close"), text)
        XCTAssertFalse(channel.isActive)
    }

    func testConnectIsRefusedAndClosed() throws {
        let channel = try connection()
        try send(channel, "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
        let text = try output(channel)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 405"), text)
        channel.embeddedEventLoop.run()
        XCTAssertFalse(channel.isActive)
    }

    /// A forwarded answer read whole from the instance leaves in one write (one iovec): its head
    /// and a small body in one buffer. A large part goes out as the buffer it came in, after the
    /// head, and a close discards what was held.
    func testAForwardedAnswerReadWholeLeavesInOneWrite() throws {
        func head(_ text: String) throws -> UpstreamHead {
            var decoder = UpstreamResponseDecoder()
            decoder.expectAnswer(toHEAD: false)
            var buffer = ByteBuffer(string: text)
            guard case .head(let head)? = try decoder.next(&buffer) else { throw XCTSkip("no head") }
            return head
        }
        let channel = try connection()
        let handler = try channel.pipeline.syncOperations.handler(type: GatewayHandler.self)
        handler.beginAnswer(status: 200, forwarding: try head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"), contentLength: 5) {
            $0.writeHeader("x-request-id", "r1")
        }
        handler.writeResponseBody(ByteBuffer(string: "he"))
        handler.writeResponseBody(ByteBuffer(string: "llo"))
        XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self), "held until the flush")
        handler.flush()
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) },
                       "HTTP/1.1 200 OK\r\nx-request-id: r1\r\ncontent-length: 5\r\n\r\nhello")
        XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self), "one write")

        // A part past the limit: the head first, then the part as the buffer it came in.
        let second = try connection()
        let other = try second.pipeline.syncOperations.handler(type: GatewayHandler.self)
        let large = ByteBuffer(repeating: UInt8(ascii: "x"), count: ResponseWriter.coalesceLimit + 1)
        other.beginAnswer(status: 200, forwarding: try head("HTTP/1.1 200 OK\r\n\r\n"), contentLength: large.readableBytes) { _ in }
        other.writeResponseBody(large)
        other.flush()
        XCTAssertEqual(try second.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) },
                       "HTTP/1.1 200 OK\r\ncontent-length: \(large.readableBytes)\r\n\r\n")
        XCTAssertEqual(try second.readOutbound(as: ByteBuffer.self), large)
        // Held, then the connection closed: nothing is written.
        let third = try connection()
        let closing = try third.pipeline.syncOperations.handler(type: GatewayHandler.self)
        closing.beginAnswer(status: 200, forwarding: try head("HTTP/1.1 200 OK\r\n\r\n"), contentLength: 1) { _ in }
        closing.closeNow()
        closing.flush()
        XCTAssertNil(try third.readOutbound(as: ByteBuffer.self))
    }
}
