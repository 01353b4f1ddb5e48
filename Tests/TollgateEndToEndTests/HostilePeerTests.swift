import Atomics
import Foundation
import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateDataPlane
import TollgateRedis
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// The gateway against clients that do what no well-behaved client does, on live sockets, with
/// bytes written by hand and answers read with strict HTTP/1.1 framing. Each test also checks
/// that other clients were served meanwhile and that the gateway is still alive.
final class HostilePeerTests: XCTestCase {
    let chat = #"{"model":"qwen2.5-0.5b-instruct","messages":[{"role":"user","content":"hello"}]}"#

    func post(_ path: String, _ body: String, key: String? = TestKeys.engineering, extra: String = "") -> String {
        var head = "POST \(path) HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n"
        if let key { head += "authorization: Bearer \(key)\r\n" }
        return head + extra + "\r\n" + body
    }

    /// A well-behaved client on a connection of its own is answered.
    func assertServed(_ gw: GatewayFixture, file: StaticString = #filePath, line: UInt = #line) async throws {
        let client = try await gw.client()
        let answer = try await client.chat(key: TestKeys.engineering)
        XCTAssertEqual(answer.status, 200, "another client is served", file: file, line: line)
        await client.close()
    }

    // MARK: One response path: HEAD and pipelining after every kind of answer

    /// A HEAD after each kind of answer, then a GET: each answer framed as its request asks, no
    /// byte left over. (A HEAD after a forwarded or cached answer desynchronised the connection.)
    func testHeadAfterEveryKindOfAnswerKeepsTheConnectionInStep() async throws {
        let redis = try RedisServer()
        defer { redis.stop() }
        let gw = try await GatewayFixture.start(instances: 1, redis: try RedisConfiguration(url: redis.url()))
        let cached = #"{"model":"qwen2.5-0.5b-instruct","temperature":0,"messages":[{"role":"user","content":"cache me"}]}"#
        let kinds: [(String, String, Int)] = [
            ("forwarded", post("/v1/chat/completions", chat), 200),
            ("cache miss", post("/v1/chat/completions", cached), 200),
            ("cache hit", post("/v1/chat/completions", cached), 200),
            ("streamed", post("/v1/chat/completions", #"{"model":"qwen2.5-0.5b-instruct","stream":true,"messages":[{"role":"user","content":"hi"}]}"#), 200),
            ("refused", post("/v1/chat/completions", chat, key: "tg-wrong"), 401),
            ("local", "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(TestKeys.engineering)\r\n\r\n", 200),
            ("not found", "GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n", 404),
        ]
        for (name, request, status) in kinds {
            let socket = try RawSocket(port: gw.port)
            try socket.send(request)
            let first = try socket.readResponse(method: "POST")
            XCTAssertEqual(first.status, status, "\(name): \(first.bodyText)")
            if name == "cache miss" { try await Task.sleep(for: .milliseconds(150)) }  // stored off the response path
            try socket.send("HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            let head = try socket.readResponse(method: "HEAD")
            XCTAssertEqual(head.status, 200, name)
            XCTAssertNotNil(head.header("content-length"), "\(name): a HEAD answer has the GET's framing headers")
            try socket.send("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            let get = try socket.readResponse(method: "GET")
            XCTAssertEqual(get.status, 200, name)
            XCTAssertEqual(get.body.count, Int(get.header("content-length") ?? "-1"), "\(name): the GET's body arrives whole")
            XCTAssertTrue(get.bodyText.contains("\"status\""), "\(name): \(get.bodyText)")
            XCTAssertFalse(socket.closes(within: .milliseconds(100)), "\(name): the connection stays open")
            XCTAssertEqual(socket.leftover, [], "\(name): no byte beyond the answers")
        }
        try await assertServed(gw)
        await gw.stop()
    }

    /// Every kind of request pipelined in one write, HEADs among them: answers in order, each
    /// framed for its own request.
    func testPipelinedMixIsAnsweredInOrder() async throws {
        let gw = try await GatewayFixture.start(instances: 1)
        let socket = try RawSocket(port: gw.port)
        let requests: [(String, String, Int)] = [
            ("POST", post("/v1/chat/completions", chat), 200),
            ("HEAD", "HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\n", 200),
            ("POST", post("/v1/chat/completions", chat, key: nil), 401),
            ("HEAD", "HEAD /v1/models HTTP/1.1\r\nhost: x\r\n\r\n", 405),
            ("GET", "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", 200),
            ("POST", post("/v1/chat/completions", #"{"model":"qwen2.5-0.5b-instruct","max_tokens":9223372036854775807}"#), 400),
            ("HEAD", "HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\n", 200),
            ("POST", post("/v1/chat/completions", #"{"model":"qwen2.5-0.5b-instruct","stream":true,"messages":[{"role":"user","content":"hi"}]}"#), 200),
            ("GET", "GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(TestKeys.engineering)\r\n\r\n", 200),
        ]
        try socket.send(requests.map(\.1).joined())
        for (i, (method, _, status)) in requests.enumerated() {
            let answer = try socket.readResponse(method: method, timeout: .seconds(10))
            XCTAssertEqual(answer.status, status, "answer \(i) (\(method)): \(answer.bodyText)")
        }
        XCTAssertEqual(socket.leftover, [])
        XCTAssertFalse(socket.closes(within: .milliseconds(100)))
        await gw.stop()
    }

    // MARK: Numbers

    /// The request that stopped every department: Int.max tokens. Now a 400, and the gateway lives.
    func testHugeMaxTokensIsABadRequestNotACrash() async throws {
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.departments[1].quota = QuotaLimits(tokensPerDay: 1_000_000)
        }
        for value in ["9223372036854775807", "1099511627775", "-1", "1e30"] {
            let socket = try RawSocket(port: gw.port)
            try socket.send(post("/v1/chat/completions", #"{"model":"qwen2.5-0.5b-instruct","messages":[],"max_tokens":"# + value + "}"))
            let answer = try socket.readResponse(method: "POST")
            XCTAssertEqual(answer.status, 400, "\(value): \(answer.bodyText)")
            XCTAssertTrue(answer.bodyText.contains("\"param\":\"max_tokens\""), answer.bodyText)
        }
        try await assertServed(gw)
        await gw.stop()
    }

    /// Duplicate members resolve as the instance resolves them (the last wins): the reservation
    /// and the usage injection follow what the instance will do.
    func testDuplicateMembersCannotDodgeMetering() async throws {
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.departments[1].quota = QuotaLimits(tokensPerDay: 100_000)
        }
        // include_usage true then false: the instance sees false, so the gateway must ask for usage itself.
        let body = #"{"model":"qwen2.5-0.5b-instruct","stream":true,"stream_options":{"include_usage":true,"include_usage":false},"max_tokens":1,"max_tokens":24,"messages":[{"role":"user","content":"hi"}]}"#
        let socket = try RawSocket(port: gw.port)
        try socket.send(post("/v1/chat/completions", body))
        let answer = try socket.readResponse(method: "POST", timeout: .seconds(10))
        XCTAssertEqual(answer.status, 200)
        XCTAssertFalse(answer.bodyText.contains("\"choices\":[]"), "the injected usage event is not passed on")
        try await Task.sleep(for: .milliseconds(50))  // settled on the loop right after the last byte went out
        let quotas = gw.dataPlane.state.quotas
        var calendar = QuotaCalendar(timeZone: quotas.settings.timeZone)
        let windows = calendar.current(atMs: Int64(Date().timeIntervalSince1970 * 1000))
        let used = quotas.usage(department: 1, at: windows)[.tokensPerDay] ?? 0
        let stats = gw.instances[0].stats
        XCTAssertEqual(stats.completionTokens, 24, "the instance generated what the last max_tokens asked for")
        XCTAssertEqual(used, stats.promptTokens + stats.completionTokens, "settled to the instance's usage, not the 1-token reservation")
        await gw.stop()
    }

    /// A request waiting on an identical one (single flight) whose client leaves gives its
    /// reservation back: the quota ends up charged with the leader's usage only.
    func testASingleFlightFollowerThatLeavesReleasesItsReservation() async throws {
        let redis = try RedisServer()
        defer { redis.stop() }
        var simulator = SimulatorConfiguration()
        simulator.timeToFirstToken = .milliseconds(400)
        let gw = try await GatewayFixture.start(instances: 1, simulator: simulator, redis: try RedisConfiguration(url: redis.url())) { config in
            config.departments[1].quota = QuotaLimits(tokensPerDay: 1_000_000)
        }
        let body = #"{"model":"qwen2.5-0.5b-instruct","temperature":0,"max_tokens":500,"messages":[{"role":"user","content":"same question"}]}"#
        let leader = try RawSocket(port: gw.port)
        try leader.send(post("/v1/chat/completions", body))
        try await Task.sleep(for: .milliseconds(100))
        var follower: RawSocket? = try RawSocket(port: gw.port)
        try follower!.send(post("/v1/chat/completions", body))
        try await Task.sleep(for: .milliseconds(100))
        follower = nil  // closes: the follower leaves while the leader is still at the instance
        XCTAssertEqual(try leader.readResponse(method: "POST", timeout: .seconds(5)).status, 200)
        try await Task.sleep(for: .milliseconds(100))
        let quotas = gw.dataPlane.state.quotas
        var calendar = QuotaCalendar(timeZone: quotas.settings.timeZone)
        let used = quotas.usage(department: 1, at: calendar.current(atMs: Int64(Date().timeIntervalSince1970 * 1000)))[.tokensPerDay] ?? 0
        let stats = gw.instances[0].stats
        XCTAssertEqual(stats.generations, 1, "one generation for both")
        XCTAssertEqual(used, stats.promptTokens + stats.completionTokens, "the follower's 500-token reservation was given back")
        _ = follower
        await gw.stop()
    }

    // MARK: Clients that never read, never finish, or switch protocols

    /// Pipelined GETs from a client that never reads: the gateway stops reading once it cannot
    /// write, so what it takes in stays bounded.
    func testAClientThatNeverReadsIsHeldBack() async throws {
        let gw = try await GatewayFixture.start(instances: 1)
        let socket = try RawSocket(port: gw.port)
        socket.setReceiveBuffer(4096)
        let request = Array("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n".utf8)
        let batch = Array([[UInt8]](repeating: request, count: 200).joined())
        var offset = 0  // where in `batch` the stream is: a partial send must be continued, not restarted
        func flood(for duration: Duration) async throws {
            let end = ContinuousClock.now + duration
            while ContinuousClock.now < end {
                let n = socket.trySend(Array(batch[offset...]))
                offset = (offset + n) % batch.count
                if n == 0 { try await Task.sleep(for: .milliseconds(10)) }
            }
        }
        func answered() -> Int { gw.dataPlane.counters.reduce(0) { $0 + $1.requests.load(ordering: .relaxed) } }
        // The kernel's buffers on both sides fill first (how fast depends on the machine's
        // load: wait until the count stops growing, for at most 20 s); then the gateway must
        // take no more requests.
        var first = answered()
        for _ in 0..<20 {
            try await flood(for: .seconds(1))
            let now = answered()
            defer { first = now }
            if now - first < 100 { break }
        }
        try await flood(for: .seconds(2))
        let second = answered()
        // Without backpressure the gateway read and answered everything (8.4 MB in 8 s, +76 MB RSS).
        XCTAssertLessThan(first, 200_000, "requests taken in while the client did not read: \(first)")
        XCTAssertLessThan(second - first, 1_000, "no more requests are taken once the client stopped reading: \(first) → \(second)")
        try await assertServed(gw)
        await gw.stop()
    }

    /// A body that never finishes is cut off at `body_timeout` on every path before
    /// authentication, and one announced larger than the limit is refused at once.
    func testBodiesThatNeverFinishAreCutOffOnEveryPath() async throws {
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.limits.bodyTimeout = .milliseconds(500)
        }
        let started = ContinuousClock.now
        var sockets: [(String, RawSocket)] = []
        for (name, head) in [
            ("no key", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n"),
            ("wrong key", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer tg-no\r\ncontent-length: 1000\r\n\r\n"),
            ("unknown path", "POST /v1/nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n"),
            ("health with a body", "GET /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n"),
            ("usage with a body", "GET /v1/usage HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(TestKeys.engineering)\r\ncontent-length: 1000\r\n\r\n"),
            ("chunked, no key", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n1"),
            ("with key", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(TestKeys.engineering)\r\ncontent-length: 1000\r\n\r\n"),
        ] {
            let socket = try RawSocket(port: gw.port)
            // A few bytes of the body, then silence (the chunked one stops inside a chunk size).
            try socket.send(head.hasSuffix("1") ? head : head + "{\"mod")
            sockets.append((name, socket))
        }
        let huge = try RawSocket(port: gw.port)
        try huge.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999\r\n\r\nabc")
        let refused = try huge.readResponse(method: "POST", timeout: .seconds(2))
        XCTAssertTrue([401, 413].contains(refused.status), "answered at once: \(refused.status)")
        XCTAssertTrue(huge.closes(within: .seconds(1)), "and closed")
        try await assertServed(gw)
        for (name, socket) in sockets {
            let answer = try socket.readResponse(method: "POST", timeout: .seconds(3))
            XCTAssertEqual(answer.status, 408, "\(name): \(answer.bodyText)")
            XCTAssertTrue(socket.closes(within: .seconds(1)), "\(name): closed after the 408")
        }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(4))
        await gw.stop()
    }

    /// An h2c upgrade and a CONNECT are answered and the connection closed, instead of leaving
    /// NIO's parser stopped with the client waiting.
    func testUpgradeAndConnectAreAnsweredAndClosed() async throws {
        let gw = try await GatewayFixture.start(instances: 1)
        let upgrade = try RawSocket(port: gw.port)
        try upgrade.send("GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
        let a = try upgrade.readResponse(method: "GET")
        XCTAssertEqual(a.status, 200)
        XCTAssertEqual(a.header("connection"), "close")
        XCTAssertTrue(upgrade.closes(within: .seconds(1)))

        let connect = try RawSocket(port: gw.port)
        try connect.send("CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        let b = try connect.readResponse(method: "CONNECT")
        XCTAssertEqual(b.status, 405, b.bodyText)
        XCTAssertTrue(connect.closes(within: .seconds(1)))

        let post = try RawSocket(port: gw.port)
        try post.send(self.post("/v1/chat/completions", chat, extra: "connection: upgrade\r\nupgrade: websocket\r\n"))
        let c = try post.readResponse(method: "POST")
        XCTAssertEqual(c.status, 200)
        XCTAssertTrue(post.closes(within: .seconds(1)))
        try await assertServed(gw)
        await gw.stop()
    }

    /// A thousand idle connections do not stop anyone else; past `max_connections` a new one is
    /// refused with 503 and closed, and counted.
    func testIdleConnectionsAndTheConnectionLimit() async throws {
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.limits.maxConnections = 1000
        }
        var idle: [RawSocket] = []
        for _ in 0..<999 { idle.append(try RawSocket(port: gw.port)) }
        func open() -> Int { gw.dataPlane.counters.reduce(0) { $0 + $1.activeConnections.load(ordering: .relaxed) } }
        // connect() returns once the kernel queued the connection; wait until the gateway took them all.
        let accepted = await gw.eventually(timeout: .seconds(10)) { open() == 999 }
        XCTAssertTrue(accepted, "\(open()) of 999 accepted")
        try await assertServed(gw)  // the 1000th
        _ = await gw.eventually(timeout: .seconds(5)) { open() == 999 }  // the served client's connection is gone
        let extra = try RawSocket(port: gw.port)  // the 1000th
        _ = await gw.eventually(timeout: .seconds(5)) { open() == 1000 }
        let over = try RawSocket(port: gw.port)
        let answer = try over.readResponse(method: "GET", timeout: .seconds(2))
        XCTAssertEqual(answer.status, 503)
        XCTAssertNotNil(answer.header("retry-after"))
        XCTAssertTrue(answer.bodyText.contains("max_connections"), answer.bodyText)
        XCTAssertTrue(over.closes(within: .seconds(1)))
        XCTAssertGreaterThanOrEqual(gw.dataPlane.counters.reduce(0) { $0 + $1.connectionsRefused.load(ordering: .relaxed) }, 1)
        idle.removeAll()
        _ = extra
        try await Task.sleep(for: .milliseconds(300))
        try await assertServed(gw)
        await gw.stop()
    }

    /// Usage reports block on SQLite off the loops: a burst of them is refused with 503 beyond a
    /// few per loop instead of queueing without bound behind a slow one.
    func testUsageReportsAreBoundedNotQueuedWithoutEnd() async throws {
        let release = DispatchSemaphore(value: 0)
        let gw = try await GatewayFixture.start(instances: 1, usageReporter: { _, _ in
            release.wait()
            return (200, "{}")
        })
        var sockets: [RawSocket] = []
        for _ in 0..<40 {
            let socket = try RawSocket(port: gw.port)
            try socket.send("GET /v1/usage HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(TestKeys.engineering)\r\n\r\n")
            sockets.append(socket)
        }
        try await Task.sleep(for: .milliseconds(300))
        for _ in 0..<40 { release.signal() }
        var statuses: [Int: Int] = [:]
        for socket in sockets {
            let answer = try socket.readResponse(timeout: .seconds(5))
            statuses[answer.status, default: 0] += 1
            if answer.status == 503 { XCTAssertNotNil(answer.header("retry-after")) }
        }
        XCTAssertGreaterThan(statuses[503] ?? 0, 0, "\(statuses)")
        XCTAssertLessThanOrEqual(statuses[200] ?? 0, 8, "at most 4 per loop ran: \(statuses)")
        XCTAssertEqual((statuses[200] ?? 0) + (statuses[503] ?? 0), 40)
        try await assertServed(gw)
        await gw.stop()
    }

    // MARK: Instances that misbehave

    /// One instance misbehaving in each way an instance can: each costs the one request (retried
    /// on the other instance when nothing was sent yet) and never the next request on a pooled
    /// connection.
    func testMisbehavingInstancesCostOneRequestAndNoPooledConnection() async throws {
        let answer = #"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#
        let health = "{\"status\":\"ok\"}"
        // The behaviour of the next chat request, by name; health probes are always answered well.
        final class Mode: @unchecked Sendable {
            let lock = NSLock()
            var value = "good"
            func get() -> String { lock.withLock { value } }
            func set(_ v: String) { lock.withLock { value = v } }
        }
        let mode = Mode()
        let upstream = try ScriptedUpstream { request in
            if request.path.hasPrefix("/healthz") || request.path.hasPrefix("/v1/models") { return .json(health) }
            switch mode.get() {
            case "extra bytes":
                // A length of 11 and 11 + 40 bytes: the 40 past it must not become the next answer.
                return ScriptedUpstream.Reply("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"a\":\"123\"}HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nXX")
            case "101":
                return ScriptedUpstream.Reply("HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n")
            case "100 then 200":
                return ScriptedUpstream.Reply("HTTP/1.1 100 Continue\r\n\r\n" + "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: \(answer.utf8.count)\r\n\r\n" + answer)
            case "huge head":
                return ScriptedUpstream.Reply("HTTP/1.1 200 OK\r\nx-big: " + String(repeating: "a", count: 200_000) + "\r\ncontent-length: 2\r\n\r\n{}", close: true)
            case "cut mid-chunk":
                return ScriptedUpstream.Reply("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n20\r\ndata: {\"choices\":[]}\n\n", close: true)
            case "usage first":
                let long = #"{"usage":{"prompt_tokens":11,"completion_tokens":22,"total_tokens":33},"choices":[{"message":{"content":""# + String(repeating: "z", count: 30_000) + #""}}]}"#
                return .json(long)
            case "connection header":
                return .json(answer, extraHeaders: "connection: x-secret\r\nx-secret: leaked\r\n")
            default:
                return .json(answer)
            }
        }
        defer { upstream.stop() }
        let gw = try await GatewayFixture.start(instances: 1) { config in
            config.pools[0].instances = [InstanceConfiguration(name: "scripted", url: UpstreamURL(host: "127.0.0.1", port: upstream.port))]
            config.departments[0].route = []
            config.health.unhealthyThreshold = 100
            config.retry.attempts = 1
            config.departments[1].quota = QuotaLimits(tokensPerDay: 1_000_000)
        }
        // Counted per day, not per minute: a minute boundary between two reads would reset it.
        func usedTokens() -> Int {
            let quotas = gw.dataPlane.state.quotas
            var calendar = QuotaCalendar(timeZone: quotas.settings.timeZone)
            return quotas.usage(department: 1, at: calendar.current(atMs: Int64(Date().timeIntervalSince1970 * 1000)))[.tokensPerDay] ?? 0
        }
        let socket = try RawSocket(port: gw.port)
        func ask() throws -> RawSocket.Response {
            try socket.send(post("/v1/chat/completions", chat))
            return try socket.readResponse(method: "POST", timeout: .seconds(5))
        }
        func next(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
            mode.set("good")
            // A fresh client connection: the one before may have been closed on purpose.
            let s = try RawSocket(port: gw.port)
            try s.send(post("/v1/chat/completions", chat))
            let a = try s.readResponse(method: "POST", timeout: .seconds(5))
            XCTAssertEqual(a.status, 200, "after \(name): \(a.bodyText)", file: file, line: line)
            XCTAssertTrue(a.bodyText.contains("\"content\":\"ok\""), "after \(name): the next answer is its own: \(a.bodyText)", file: file, line: line)
        }

        XCTAssertEqual(try ask().status, 200)

        mode.set("extra bytes")
        let extra = try ask()
        XCTAssertEqual(extra.bodyText, "{\"a\":\"123\"}")
        try next("extra bytes")
        try next("extra bytes, twice")

        mode.set("101")
        let switched = try RawSocket(port: gw.port)
        try switched.send(post("/v1/chat/completions", chat))
        XCTAssertEqual(try switched.readResponse(method: "POST").status, 502)
        try next("101")

        mode.set("100 then 200")
        let continued = try RawSocket(port: gw.port)
        try continued.send(post("/v1/chat/completions", chat))
        let c = try continued.readResponse(method: "POST")
        XCTAssertEqual(c.status, 200)
        XCTAssertTrue(c.bodyText.contains("\"content\":\"ok\""))
        try next("100 then 200")

        mode.set("huge head")
        let big = try RawSocket(port: gw.port)
        try big.send(post("/v1/chat/completions", chat))
        XCTAssertEqual(try big.readResponse(method: "POST").status, 502)
        try next("huge head")

        mode.set("cut mid-chunk")
        let cut = try RawSocket(port: gw.port)
        try cut.send(post("/v1/chat/completions", chat))
        XCTAssertThrowsError(try cut.readResponse(method: "POST"), "a stream cut by the instance is cut for the client: no clean end")
        try next("cut mid-chunk")

        mode.set("usage first")
        try await Task.sleep(for: .milliseconds(50))  // the request before is settled right after its last byte went out
        let before = usedTokens()
        let long = try RawSocket(port: gw.port)
        try long.send(post("/v1/chat/completions", chat))
        XCTAssertEqual(try long.readResponse(method: "POST").status, 200)
        try await Task.sleep(for: .milliseconds(50))
        XCTAssertEqual(usedTokens() - before, 33, "usage read from the start of a 30 KB answer, not the reservation")

        mode.set("connection header")
        let hop = try RawSocket(port: gw.port)
        try hop.send(post("/v1/chat/completions", chat, extra: "connection: x-client-secret\r\nx-client-secret: mine\r\n"))
        let h = try hop.readResponse(method: "POST")
        XCTAssertEqual(h.status, 200)
        XCTAssertNil(h.header("x-secret"), "a header the instance named in Connection is not forwarded")
        let forwarded = upstream.requests.last { $0.path.hasPrefix("/v1/chat") }
        XCTAssertFalse(forwarded?.head.lowercased().contains("x-client-secret") ?? true, "nor one the client named")

        try await assertServed(gw)
        await gw.stop()
    }
}
