import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateDataPlane
import TollgateSimulator
import TollgateTestSupport
import XCTest

final class BadInputTests: XCTestCase {
    func testErrorsUseTheOpenAIFormatAndTheRightStatus() async throws {
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.limits.maxBodyBytes = 1000
        }
        let client = try await gw.client()
        let key = [("authorization", "Bearer \(TestKeys.engineering)")]
        func check(_ a: Answer, _ status: Int, _ code: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertEqual(a.status, status, a.body, file: file, line: line)
            XCTAssertEqual(a.errorCode, code, a.body, file: file, line: line)
            let error = a.json?["error"] as? [String: Any]
            XCTAssertNotNil(error?["message"] as? String, file: file, line: line)
            XCTAssertTrue(error?.keys.contains("param") ?? false, file: file, line: line)
            XCTAssertEqual(a.headers.first(name: "content-type"), "application/json", file: file, line: line)
        }
        check(try await client.send(.POST, "/v1/chat/completions", body: "{\"model\": \"qwen", headers: key), 400, "invalid_request")
        check(try await client.send(.POST, "/v1/chat/completions", body: "{\"messages\":[]}", headers: key), 400, "invalid_request")
        check(try await client.send(.POST, "/v1/chat/completions", body: "{\"model\":\"gpt-9\"}", headers: key), 404, "model_not_found")
        check(try await client.send(.POST, "/v1/chat/completions", body: "{}"), 401, "invalid_api_key")
        check(try await client.send(.POST, "/v1/chat/completions", body: "{}", headers: [("authorization", "Bearer tg-wrong")]), 401, "invalid_api_key")
        check(try await client.send(.POST, "/v1/chat/completions", body: "{}", headers: [("authorization", "Basic abc")]), 401, "invalid_api_key")
        check(try await client.send(.GET, "/v1/nothing-here"), 404, "not_found")
        check(try await client.send(.GET, "/v1/chat/completions", headers: key), 405, "method_not_allowed")
        // The connection survived all of that: a good request still works on it.
        let status = try await client.chat(key: TestKeys.engineering).status; XCTAssertEqual(status, 200)
        XCTAssertEqual(gw.instances[0].stats.generations + gw.instances[0].stats.errors, 1, "no bad request reached the instance")
        await client.close()

        let big = String(repeating: "x", count: 2000)
        let oversize = try await gw.client()
        check(try await oversize.send(.POST, "/v1/chat/completions", body: "{\"model\":\"\(big)\"}", headers: key), 413, "request_too_large")
        await oversize.close()
        await gw.stop()
    }

    func testOversizeChunkedBodyIsRefused() async throws {
        let gw = try await GatewayFixture.start(instances: 1) { config in config.limits.maxBodyBytes = 1000 }
        let raw = try await gw.raw()
        let chunk = String(repeating: "a", count: 800)
        try await raw.write("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(TestKeys.engineering)\r\ntransfer-encoding: chunked\r\n\r\n")
        try await raw.write("320\r\n\(chunk)\r\n320\r\n\(chunk)\r\n")
        let answer = try await raw.readUntilClosed()
        XCTAssertTrue(answer.hasPrefix("HTTP/1.1 413"), answer)
        XCTAssertTrue(answer.contains("request_too_large"))
        await gw.stop()
    }

    func testTooManyOrTooLargeHeadersGet431() async throws {
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.limits.maxHeaderCount = 20
            config.limits.maxHeaderBytes = 4096
        }
        let many = try await gw.raw()
        let headers = (0..<50).map { "x-h\($0): v\r\n" }.joined()
        try await many.write("GET /healthz HTTP/1.1\r\nhost: x\r\n\(headers)\r\n")
        let a = try await many.readUntilClosed()
        XCTAssertTrue(a.hasPrefix("HTTP/1.1 431"), a)
        XCTAssertTrue(a.contains("\"type\":\"invalid_request_error\""))

        let large = try await gw.raw()
        try await large.write("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: \(String(repeating: "b", count: 8000))\r\n\r\n")
        let b = try await large.readUntilClosed()
        XCTAssertTrue(b.hasPrefix("HTTP/1.1 431"), b)

        let garbage = try await gw.raw()
        try await garbage.write("HELLO\r\n\r\n")
        let c = try await garbage.readUntilClosed()
        XCTAssertTrue(c.hasPrefix("HTTP/1.1 400"), c)
        await gw.stop()
    }

    /// Heads two readers could read differently are refused by the gateway's own parser
    /// (`RequestDecoder`): 400 in the OpenAI format and a close, never forwarded — request
    /// smuggling needs a proxy and an instance that disagree on where a request ends.
    func testAmbiguousHeadsAreRefusedAndClosed() async throws {
        let gw = try await GatewayFixture.start(instances: 1)
        let key = "authorization: Bearer \(TestKeys.engineering)\r\n"
        let body = #"{"model":"qwen2.5-0.5b-instruct","messages":[{"role":"user","content":"hi"}]}"#
        let cases: [(String, String)] = [
            ("CL and TE", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\(key)content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
            ("two lengths", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\(key)content-length: \(body.utf8.count)\r\ncontent-length: 5\r\n\r\n\(body)"),
            ("TE not chunked", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\(key)transfer-encoding: gzip, chunked, identity\r\n\r\n"),
            ("obs-fold", "GET /healthz HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n folded\r\n\r\n"),
            ("bare LF", "GET /healthz HTTP/1.1\nhost: x\n\n"),
            ("space before colon", "GET /healthz HTTP/1.1\r\nhost : x\r\n\r\n"),
            ("no Host", "GET /healthz HTTP/1.1\r\n\r\n"),
            ("close and keep-alive", "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: keep-alive\r\nconnection: close\r\n\r\n"),
            ("NUL in a value", "GET /healthz HTTP/1.1\r\nhost: x\r\nx-a: a\u{0}b\r\n\r\n"),
        ]
        for (name, bytes) in cases {
            let raw = try await gw.raw()
            try await raw.write(bytes)
            let answer = try await raw.readUntilClosed()
            XCTAssertTrue(answer.hasPrefix("HTTP/1.1 400"), "\(name): \(answer)")
            XCTAssertTrue(answer.contains("\"type\":\"invalid_request_error\""), "\(name): \(answer)")
            XCTAssertTrue(answer.lowercased().contains("connection: close"), "\(name): \(answer)")
        }
        XCTAssertEqual(gw.instances[0].stats.generations, 0, "nothing ambiguous reached an instance")
        await gw.stop()
    }

    /// A bad head pipelined behind a forwarded request waits its turn: the request before it is
    /// answered whole, then the refusal, then the close (the refusal must not cut into the answer
    /// being streamed).
    func testARefusedHeadBehindAForwardedRequestIsAnsweredAfterIt() async throws {
        let gw = try await GatewayFixture.start(instances: 1)
        let raw = try await gw.raw()
        let body = #"{"model":"qwen2.5-0.5b-instruct","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#
        try await raw.write("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(TestKeys.engineering)\r\n"
            + "content-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)"
            + "GET /healthz HTTP/1.1\r\n\r\n")  // no Host: refused
        let all = try await raw.readUntilClosed()
        // Status lines only (the refusal's message itself says "HTTP/1.1 request").
        let statuses = all.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }.filter { Int($0) != nil }
        XCTAssertEqual(statuses, ["200", "400"], all)
        let first = try XCTUnwrap(all.components(separatedBy: "HTTP/1.1 400").first)
        XCTAssertTrue(first.contains("\"usage\""), "the forwarded answer arrived whole before the refusal: \(all)")
        await gw.stop()
    }

    /// Slow-loris: heads and bodies that trickle in byte by byte are cut off at the configured
    /// time, while other clients are served meanwhile.
    func testSlowClientsAreCutOffWhileOthersAreServed() async throws {
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.limits.headerTimeout = .milliseconds(400)
            config.limits.bodyTimeout = .milliseconds(400)
        }
        let slowHead = try await gw.raw()
        let slowBody = try await gw.raw()
        let start = ContinuousClock.now
        let trickle = Task {
            let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            for byte in head { try? await slowHead.write(String(byte)); try? await Task.sleep(for: .milliseconds(30)) }
        }
        try await slowBody.write("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(TestKeys.engineering)\r\ncontent-length: 100\r\n\r\n{\"mo")
        // Meanwhile a normal client is served.
        let client = try await gw.client()
        for _ in 0..<5 { let status = try await client.chat(key: TestKeys.engineering).status; XCTAssertEqual(status, 200) }
        let headAnswer = try await slowHead.readUntilClosed()
        let bodyAnswer = try await slowBody.readUntilClosed()
        let elapsed = ContinuousClock.now - start
        trickle.cancel()
        XCTAssertTrue(headAnswer.hasPrefix("HTTP/1.1 408"), headAnswer)
        XCTAssertTrue(bodyAnswer.hasPrefix("HTTP/1.1 408"), bodyAnswer)
        XCTAssertLessThan(elapsed, .seconds(2))
        await client.close()
        await gw.stop()
    }

    func testIdleKeepAliveConnectionIsClosed() async throws {
        let gw = try await GatewayFixture.start(instances: 1) { config in config.limits.idleTimeout = .milliseconds(300) }
        // Taken before connecting: the gateway's timer starts when it accepts, later.
        let start = ContinuousClock.now
        let raw = try await gw.raw()
        let nothing = try await raw.readUntilClosed(timeout: .seconds(5))
        let elapsed = ContinuousClock.now - start
        XCTAssertEqual(nothing, "")
        // Not before idle_timeout (a timer never fires early); within it plus a margin for a
        // loaded, shared 2-core machine (a connection left open fails the 5 s read instead).
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(300))
        XCTAssertLessThan(elapsed, .milliseconds(300 + 2_000))
        await gw.stop()
    }

    /// curl sends `Expect: 100-continue` for bodies over 1 KiB and waits for the go-ahead.
    func testExpectContinue() async throws {
        let gw = try await GatewayFixture.start(instances: 1)
        let body = #"{"model":"qwen2.5-0.5b-instruct","messages":[{"role":"user","content":"hi"}]}"#
        let good = try await gw.raw()
        try await good.write("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer \(TestKeys.engineering)\r\nexpect: 100-continue\r\ncontent-length: \(body.utf8.count)\r\n\r\n")
        try await Task.sleep(for: .milliseconds(100))
        try await good.write(body)
        let answer = try await good.readUntilClosed()
        XCTAssertTrue(answer.hasPrefix("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"), answer)

        let refused = try await gw.raw()
        try await refused.write("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer nope\r\nexpect: 100-continue\r\ncontent-length: 5000\r\n\r\n")
        let start = ContinuousClock.now
        let no = try await refused.readUntilClosed()
        XCTAssertTrue(no.hasPrefix("HTTP/1.1 401"), no)
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(1), "answered without waiting for the body")
        await gw.stop()
    }

    /// Pipelined requests, one answered locally and two forwarded, come back in order.
    func testPipelinedRequestsAreAnsweredInOrder() async throws {
        let gw = try await GatewayFixture.start(instances: 1)
        let raw = try await gw.raw()
        func chat(_ id: String, close: Bool = false) -> String {
            let body = #"{"model":"qwen2.5-0.5b-instruct","messages":[{"role":"user","content":"hi"}]}"#
            return "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: \(id)\r\n\(close ? "connection: close\r\n" : "")authorization: Bearer \(TestKeys.engineering)\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)"
        }
        try await raw.write(chat("first") + "GET /nowhere HTTP/1.1\r\nhost: x\r\nx-request-id: second\r\n\r\n" + chat("third", close: true))
        let all = try await raw.readUntilClosed()
        let ids = all.components(separatedBy: "\r\n").filter { $0.lowercased().hasPrefix("x-request-id: ") }.map { String($0.dropFirst(14)) }
        XCTAssertEqual(ids, ["first", "second", "third"], all)
        XCTAssertEqual(all.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }, ["200", "404", "200"])
        await gw.stop()
    }

    /// Forty pipelined requests in one write — forwarded, refused, and a stream among them —
    /// are all answered, in order, on the one connection.
    func testManyPipelinedRequestsInOneWrite() async throws {
        let gw = try await GatewayFixture.start(instances: 2)
        let raw = try await gw.raw()
        var text = ""
        var expected: [String] = []
        for i in 0..<40 {
            let close = i == 39 ? "connection: close\r\n" : ""
            if i % 10 == 3 {
                text += "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: r\(i)\r\n\(close)authorization: Bearer wrong\r\ncontent-length: 2\r\n\r\n{}"
                expected.append("401")
            } else {
                let stream = i % 10 == 7 ? #","stream":true"# : ""
                let body = #"{"model":"qwen2.5-0.5b-instruct","messages":[{"role":"user","content":"hi \#(i)"}]\#(stream)}"#
                text += "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: r\(i)\r\n\(close)authorization: Bearer \(TestKeys.engineering)\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)"
                expected.append("200")
            }
        }
        try await raw.write(text)
        let all = try await raw.readUntilClosed()
        let ids = all.components(separatedBy: "\r\n").filter { $0.lowercased().hasPrefix("x-request-id: ") }.map { String($0.dropFirst(14)) }
        XCTAssertEqual(ids, (0..<40).map { "r\($0)" })
        XCTAssertEqual(all.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }, expected)
        await gw.stop()
    }
}

/// What an instance receives: the request head the gateway writes, byte for byte.
final class UpstreamRequestTests: XCTestCase {
    func testTheForwardedHeadDropsHopByHopHeadersAndTheKeyAndAddsTheGatewaysOwn() async throws {
        let upstream = try await CaptureServer.start()
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.pools[0].instances = [InstanceConfiguration(
                name: "capture", url: UpstreamURL(host: "127.0.0.1", port: upstream.port, basePath: "/base"), apiKey: "sk-instance")]
        }
        let raw = try await gw.raw()
        let body = #"{"model":"qwen2.5-0.5b-instruct","temperature":0.7,"messages":[{"role":"user","content":"héllo"}]}"#
        try await raw.write(
            "POST /v1/chat/completions?trace=1 HTTP/1.1\r\nHost: gateway.example\r\nAuthorization: Bearer \(TestKeys.engineering)\r\n"
                + "Connection: TE, X-Drop-Me\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Request-Id: my-id-1\r\nX-Forwarded-For: 10.1.2.3\r\n"
                + "X-Real-IP: 6.6.6.6\r\nX-Drop-Me: secret\r\nx-forwarded-for: 10.9.9.9\r\nX-Custom: kept as is\r\nX-Tollgate-Priority: batch\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n"
                + "connection: close\r\n\r\n\(body)")
        let answer = try await raw.readUntilClosed()
        XCTAssertTrue(answer.hasPrefix("HTTP/1.1 200 OK\r\n"), answer)
        XCTAssertTrue(answer.hasSuffix(CaptureServer.answer), answer)
        let request = try XCTUnwrap(upstream.requests.first { $0.hasPrefix("POST ") }, "\(upstream.requests)")  // (health probes GET)
        let parts = request.components(separatedBy: "\r\n\r\n")
        let lines = parts[0].components(separatedBy: "\r\n")
        XCTAssertEqual(lines[0], "POST /base/v1/chat/completions?trace=1 HTTP/1.1")
        let headers = lines.dropFirst().map { line -> (String, String) in
            let colon = line.firstIndex(of: ":")!
            return (line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        func values(_ name: String) -> [String] { headers.filter { $0.0 == name }.map(\.1) }
        XCTAssertEqual(values("host"), ["127.0.0.1:\(upstream.port)"])
        XCTAssertEqual(values("authorization"), ["Bearer sk-instance"], "the client's key never reaches an instance")
        XCTAssertEqual(values("content-length"), [String(body.utf8.count)])
        XCTAssertEqual(values("x-request-id"), ["my-id-1"])
        XCTAssertEqual(values("x-real-ip"), ["127.0.0.1"])
        XCTAssertEqual(values("x-forwarded-for"), ["10.1.2.3, 10.9.9.9, 127.0.0.1"], "every hop the client's fields name, then the client")
        XCTAssertEqual(values("x-forwarded-proto"), ["http"])
        XCTAssertEqual(values("x-custom"), ["kept as is"])
        XCTAssertEqual(values("content-type"), ["application/json"])
        for hop in ["connection", "keep-alive", "te", "transfer-encoding", "expect", "x-tollgate-priority", "x-drop-me"] {
            XCTAssertEqual(values(hop), [], hop)
        }
        XCTAssertEqual(parts[1], body, "the body unchanged")
        await gw.stop()
        await upstream.stop()
    }

    /// A request whose target is in absolute form (`POST http://host/path`, which RFC 9112 §3.2.2
    /// says a server must accept) is routed by its path and reaches the instance in origin form.
    func testAnAbsoluteFormTargetReachesTheInstanceInOriginForm() async throws {
        let upstream = try await CaptureServer.start()
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.pools[0].instances = [InstanceConfiguration(
                name: "capture", url: UpstreamURL(host: "127.0.0.1", port: upstream.port, basePath: "/base"))]
        }
        let raw = try await gw.raw()
        let body = #"{"model":"qwen2.5-0.5b-instruct","temperature":0.7,"messages":[{"role":"user","content":"hi"}]}"#
        try await raw.write(
            "POST http://gateway.example/v1/chat/completions?trace=1 HTTP/1.1\r\nHost: gateway.example\r\n"
                + "Authorization: Bearer \(TestKeys.engineering)\r\ncontent-length: \(body.utf8.count)\r\nconnection: close\r\n\r\n\(body)")
        let answer = try await raw.readUntilClosed()
        XCTAssertTrue(answer.hasPrefix("HTTP/1.1 200 OK\r\n"), answer)
        let request = try XCTUnwrap(upstream.requests.first { $0.hasPrefix("POST ") }, "\(upstream.requests)")
        XCTAssertTrue(request.hasPrefix("POST /base/v1/chat/completions?trace=1 HTTP/1.1\r\n"), request)
        await gw.stop()
        await upstream.stop()
    }

    /// The gateway frames what it forwards: an answer without a body (204) gets no chunked
    /// framing, a body without a length (an HTTP/1.0-style answer ended by close) is chunked,
    /// and the connection to the client stays usable after each.
    func testAnswersWithoutABodyOrWithoutALengthAreFramedForTheClient() async throws {
        let noContent = try await CaptureServer.start(answer: "HTTP/1.1 204 No Content\r\nx-up: 1\r\n\r\n")
        let unframed = try await CaptureServer.start(answer: "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n" + CaptureServer.answer,
                                                    closeAfter: true)
        for (upstream, expectStatus) in [(noContent, "204"), (unframed, "200")] {
            let gw = try await GatewayFixture.start(instances: 1) { config in
                config.pools[0].instances = [InstanceConfiguration(name: "raw", url: UpstreamURL(host: "127.0.0.1", port: upstream.port))]
            }
            let raw = try await gw.raw()
            let body = #"{"model":"qwen2.5-0.5b-instruct","temperature":0.7,"messages":[{"role":"user","content":"x"}]}"#
            func request(_ id: String, close: Bool) -> String {
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-request-id: \(id)\r\nauthorization: Bearer \(TestKeys.engineering)\r\n"
                    + (close ? "connection: close\r\n" : "") + "content-length: \(body.utf8.count)\r\n\r\n\(body)"
            }
            try await raw.write(request("a", close: false) + request("b", close: true))
            let all = try await raw.readUntilClosed()
            let answers = all.components(separatedBy: "HTTP/1.1 ").dropFirst()
            XCTAssertEqual(answers.map { String($0.prefix(3)) }, [expectStatus, expectStatus], all)
            if expectStatus == "204" {
                XCTAssertFalse(all.lowercased().contains("transfer-encoding"), all)
                XCTAssertFalse(all.contains("0\r\n\r\n"), "no body, not even an empty chunk: \(all)")
            } else {
                XCTAssertEqual(all.lowercased().components(separatedBy: "transfer-encoding: chunked").count - 1, 2, all)
                let size = String(CaptureServer.answer.utf8.count, radix: 16)
                XCTAssertEqual(all.components(separatedBy: "\r\n\r\n\(size)\r\n\(CaptureServer.answer)\r\n0\r\n\r\n").count - 1, 2, all)
            }
            await gw.stop()
            await upstream.stop()
        }
    }
}
