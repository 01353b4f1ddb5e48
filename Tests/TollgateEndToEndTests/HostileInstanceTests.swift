import Atomics
import Foundation
import TollgateCore
import TollgateDataPlane
import TollgateTestSupport
import XCTest

/// Instances are outside the gateway too: their answers are read by the gateway's own strict
/// parser (`ResponseHeadParser`, `ChunkedBodyDecoder`) on live sockets. An answer that cannot
/// be read is a failed try blamed on the instance — a 502 in the OpenAI error format when
/// nothing was sent yet — and its connection is never used again; well-formed answers of every
/// framing reach the client intact, without the instance's hop-by-hop headers.
final class HostileInstanceTests: XCTestCase {
    let chat = #"{"model":"qwen2.5-0.5b-instruct","messages":[{"role":"user","content":"hello"}]}"#
    static let answer = #"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#

    func post(_ body: String) -> String {
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n"
            + "authorization: Bearer \(TestKeys.engineering)\r\n\r\n" + body
    }

    /// The behaviour of the next chat request; health probes are always answered well.
    final class Mode: @unchecked Sendable {
        let lock = NSLock()
        var value = "good"
        func get() -> String { lock.withLock { value } }
        func set(_ v: String) { lock.withLock { value = v } }
    }

    func start(_ replies: [String: ScriptedUpstream.Reply]) async throws -> (ScriptedUpstream, GatewayFixture, Mode) {
        let mode = Mode()
        let upstream = try ScriptedUpstream { request in
            if !request.path.hasPrefix("/v1/chat") { return .json(#"{"status":"ok"}"#) }
            return replies[mode.get()] ?? .json(Self.answer)
        }
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.pools[0].instances = [InstanceConfiguration(name: "scripted", url: UpstreamURL(host: "127.0.0.1", port: upstream.port))]
            config.departments[0].route = []
            config.health.unhealthyThreshold = 100
            config.health.maxFails = 1000  // blamed failures are counted, not ejected for
            config.retry.attempts = 1
        }
        return (upstream, gw, mode)
    }

    func blamed(_ gw: GatewayFixture) -> Int {
        gw.dataPlane.counters.reduce(0) { $0 + $1.upstreamFailures.load(ordering: .relaxed) }
    }

    func testGarbledAnswersAre502AndTheirConnectionIsNeverReused() async throws {
        let garbled: [String: ScriptedUpstream.Reply] = [
            "content-length and transfer-encoding": ScriptedUpstream.Reply(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
            "bad chunk size": ScriptedUpstream.Reply(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
            "obs-fold": ScriptedUpstream.Reply("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-a: b\r\n c\r\ncontent-length: 2\r\n\r\n{}"),
            "over-long head": ScriptedUpstream.Reply(
                "HTTP/1.1 200 OK\r\nx-big: " + String(repeating: "a", count: 70_000) + "\r\ncontent-length: 2\r\n\r\n{}"),
            "bare LF": ScriptedUpstream.Reply("HTTP/1.1 200 OK\ncontent-type: application/json\ncontent-length: 2\n\n{}"),
            "two lengths": ScriptedUpstream.Reply("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}"),
            "NUL in a value": ScriptedUpstream.Reply("HTTP/1.1 200 OK\r\nx-a: a\u{0}b\r\ncontent-length: 2\r\n\r\n{}"),
        ]
        let (upstream, gw, mode) = try await start(garbled)
        defer { upstream.stop() }
        for name in garbled.keys.sorted() {
            mode.set(name)
            let before = blamed(gw)
            let socket = try RawSocket(port: gw.port)
            try socket.send(post(chat))
            let a = try socket.readResponse(method: "POST", timeout: .seconds(5))
            XCTAssertEqual(a.status, 502, name)
            XCTAssertEqual(a.header("content-type"), "application/json", name)
            XCTAssertTrue(a.bodyText.hasPrefix(#"{"error":{"#), "\(name): \(a.bodyText)")
            XCTAssertTrue(a.bodyText.contains(#""code":"upstream_unavailable""#), "\(name): \(a.bodyText)")
            XCTAssertTrue(a.bodyText.contains("not valid HTTP/1.1"), "\(name): \(a.bodyText)")
            XCTAssertEqual(blamed(gw) - before, 1, "\(name): counted against the instance")
            let seen = upstream.requests.count
            let spoiled = try XCTUnwrap(upstream.requests.last { $0.path.hasPrefix("/v1/chat") }).connection

            // The next requests are answered with their own answers, on other connections.
            mode.set("good")
            for _ in 0..<3 {
                let s = try RawSocket(port: gw.port)
                try s.send(post(chat))
                let next = try s.readResponse(method: "POST", timeout: .seconds(5))
                XCTAssertEqual(next.status, 200, "after \(name)")
                XCTAssertEqual(next.bodyText, Self.answer, "after \(name)")
            }
            let reused = upstream.requests[seen...].filter { $0.connection == spoiled }.count
            XCTAssertEqual(reused, 0, "\(name): the connection that carried it carried nothing after it")
        }
        await gw.stop()
    }

    func testBytesPastTheLengthAreNotTheNextAnswer() async throws {
        let (upstream, gw, mode) = try await start([
            "extra": ScriptedUpstream.Reply("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
                + "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"bad\":1}"),
        ])
        defer { upstream.stop() }
        mode.set("extra")
        let socket = try RawSocket(port: gw.port)
        try socket.send(post(chat))
        let a = try socket.readResponse(method: "POST")
        XCTAssertEqual(a.status, 200)
        XCTAssertEqual(a.bodyText, "{}", "the answer within its length is delivered")
        let seen = upstream.requests.count
        let spoiled = try XCTUnwrap(upstream.requests.last { $0.path.hasPrefix("/v1/chat") }).connection
        mode.set("good")
        for _ in 0..<3 {
            try socket.send(post(chat))
            XCTAssertEqual(try socket.readResponse(method: "POST").bodyText, Self.answer)
        }
        XCTAssertEqual(upstream.requests[seen...].filter { $0.connection == spoiled }.count, 0, "never reused")
        await gw.stop()
    }

    func testChunkedAndUntilCloseAnswersReachTheClientIntact() async throws {
        let json = Array(Self.answer.utf8)
        var chunked = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        var k = 0
        for size in [1, 7, 30, 100] where k < json.count {
            let part = json[k..<min(json.count, k + size)]
            chunked += String(part.count, radix: 16) + ";ext=1\r\n" + String(decoding: part, as: UTF8.self) + "\r\n"
            k += part.count
        }
        chunked += String(json.count - k, radix: 16) + "\r\n" + String(decoding: json[k...], as: UTF8.self) + "\r\n0\r\nx-trailer: t\r\n\r\n"
        let (upstream, gw, mode) = try await start([
            "chunked": ScriptedUpstream.Reply(chunked),
            "until close": ScriptedUpstream.Reply("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + Self.answer, close: true),
            "1.0 until close": ScriptedUpstream.Reply("HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n" + Self.answer, close: true),
            "1.0 keep-alive": ScriptedUpstream.Reply(
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-type: application/json\r\ncontent-length: \(json.count)\r\n\r\n" + Self.answer),
        ])
        defer { upstream.stop() }
        // One client connection throughout: every answer is framed so that it stays in step.
        let socket = try RawSocket(port: gw.port)
        for name in ["chunked", "until close", "1.0 until close", "1.0 keep-alive", "chunked"] {
            mode.set(name)
            try socket.send(post(chat))
            let a = try socket.readResponse(method: "POST")
            XCTAssertEqual(a.status, 200, name)
            XCTAssertEqual(a.bodyText, Self.answer, name)
            XCTAssertNil(a.header("x-trailer"), name)
        }
        mode.set("good")
        try socket.send(post(chat))
        XCTAssertEqual(try socket.readResponse(method: "POST").bodyText, Self.answer)
        XCTAssertEqual(blamed(gw), 0)
        await gw.stop()
    }

    func testHopByHopHeadersAndThoseConnectionNamesAreNotForwarded() async throws {
        let extra = "Connection: keep-alive, X-Secret\r\nkeep-alive: timeout=5\r\nX-Secret: s\r\nproxy-connection: keep-alive\r\n"
            + "upgrade: h2c\r\ntrailer: x-t\r\nte: trailers\r\nx-request-id: theirs\r\nX-Kept: yes\r\nX-Mixed-Case: Some  Value  \r\n"
            + "connection: x-other\r\nx-other: o\r\nx-secrets: kept\r\n"
        let (upstream, gw, mode) = try await start(["hop": .json(Self.answer, extraHeaders: extra)])
        defer { upstream.stop() }
        mode.set("hop")
        let socket = try RawSocket(port: gw.port)
        try socket.send(post(chat))
        let a = try socket.readResponse(method: "POST")
        XCTAssertEqual(a.status, 200)
        XCTAssertEqual(a.bodyText, Self.answer)
        for name in ["connection", "keep-alive", "x-secret", "proxy-connection", "upgrade", "trailer", "te", "x-other", "transfer-encoding"] {
            XCTAssertNil(a.header(name), name)
        }
        XCTAssertEqual(a.headers.filter { $0.0.lowercased() == "x-request-id" }.count, 1)
        XCTAssertNotEqual(a.header("x-request-id"), "theirs")
        XCTAssertEqual(a.headers.filter { $0.0.lowercased() == "content-length" }.map(\.1), ["\(Self.answer.utf8.count)"])
        XCTAssertEqual(a.header("content-type"), "application/json")
        XCTAssertEqual(a.header("X-Kept"), "yes")
        XCTAssertEqual(a.header("x-secrets"), "kept", "only the names listed, whole")
        XCTAssertTrue(a.headers.contains { $0.0 == "X-Mixed-Case" && $0.1 == "Some  Value" }, "names as sent, values without the whitespace around them")
        // The connection is still in step.
        mode.set("good")
        try socket.send(post(chat))
        XCTAssertEqual(try socket.readResponse(method: "POST").bodyText, Self.answer)
        await gw.stop()
    }
}
