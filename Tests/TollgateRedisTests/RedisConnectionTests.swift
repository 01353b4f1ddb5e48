import Foundation
import Logging
import NIOCore
@testable import TollgateRedis
import TollgateTestSupport
import XCTest

/// Round trips against a real Redis: a private `redis-server`, or `TOLLGATE_TEST_REDIS_URL`
/// when given (keys are prefixed with a random id, so a shared server is safe).
final class RedisConnectionTests: XCTestCase {
    private var server: RedisServer?
    private var client: TestClient!
    private var prefix = ""

    override func setUp() async throws {
        let configuration: RedisConfiguration
        if let url = ProcessInfo.processInfo.environment["TOLLGATE_TEST_REDIS_URL"], !url.isEmpty {
            configuration = try RedisConfiguration(url: url)
        } else {
            let server = try RedisServer()
            self.server = server
            configuration = try RedisConfiguration(url: server.url())
        }
        prefix = "tollgate-test:\(UUID().uuidString):"
        client = TestClient(configuration)
        let available = try await client.waitUntilAvailable()
        XCTAssertTrue(available, "Redis at \(configuration.host):\(configuration.port) did not become available")
    }

    override func tearDown() async throws {
        try await client?.shutdown()
        server?.stop()
    }

    func testStringCommandsRoundTrip() async throws {
        let key = prefix + "counter"
        let set = try await client.send("SET", key, "41")
        XCTAssertEqual(set, .simpleString("OK"))
        let get = try await client.send("GET", key)
        XCTAssertEqual(get, .bulkString(Array("41".utf8)))
        XCTAssertEqual(get.int, 41)
        let incremented = try await client.send("INCRBY", key, "5")
        XCTAssertEqual(incremented, .integer(46))
        let expired = try await client.send("EXPIRE", key, "60")
        XCTAssertEqual(expired, .integer(1))
        let ttl = try await client.send("TTL", key)
        XCTAssertGreaterThan(ttl.int ?? 0, 50)
        let deleted = try await client.send("DEL", key)
        XCTAssertEqual(deleted, .integer(1))
        let missing = try await client.send("GET", key)
        XCTAssertEqual(missing, .null)
    }

    func testTypedHelpers() async throws {
        let key = prefix + "typed"
        try await client.withConnection { $0.set(key, to: [1, 2, 3], expiresIn: .seconds(30)) }
        let value = try await client.withConnection { $0.get(key) }
        XCTAssertEqual(value, [1, 2, 3])
        let counter = prefix + "typed-counter"
        let incremented = try await client.withConnection { $0.incrementBy(counter, 10) }
        XCTAssertEqual(incremented, 10)
        let hasTTL = try await client.withConnection { $0.expire(counter, in: .seconds(30)) }
        XCTAssertTrue(hasTTL)
        let deleted = try await client.withConnection { $0.delete(key, counter) }
        XCTAssertEqual(deleted, 2)
        let gone = try await client.withConnection { $0.get(key) }
        XCTAssertNil(gone)
    }

    func testEvalReturnsAnArray() async throws {
        let key = prefix + "lease"
        let script = """
        local taken = redis.call('INCRBY', KEYS[1], ARGV[1])
        redis.call('PEXPIRE', KEYS[1], 60000)
        return {KEYS[1], taken, {1, 'nested'}, redis.call('GET', 'no-such-key-' .. KEYS[1])}
        """
        let reply = try await client.withConnection { $0.eval(script, keys: [key], arguments: ["100"]) }
        XCTAssertEqual(reply, .array([
            .bulkString(Array(key.utf8)),
            .integer(100),
            .array([.integer(1), .bulkString(Array("nested".utf8))]),
            .null,  // a Lua false (nil reply) becomes a RESP null
        ]))
        _ = try await client.send("DEL", key)
    }

    func testValuesAreBinarySafe() async throws {
        let key = Array((prefix + "binary\r\n").utf8) + [0, 255]
        let value = (0...255).map { UInt8($0) } + Array("\r\n$-1\r\n*0\r\n".utf8) + (0...255).map { UInt8(255 - $0) }
        let set = try await client.withConnection { $0.send([Array("SET".utf8), key, value]) }
        XCTAssertEqual(set, .simpleString("OK"))
        let get = try await client.withConnection { $0.send([Array("GET".utf8), key]) }
        XCTAssertEqual(get, .bulkString(value))

        // The same through ByteBuffer arguments.
        let buffered = try await client.withConnection {
            $0.send([ByteBuffer(string: "GET"), ByteBuffer(bytes: key)])
        }
        XCTAssertEqual(buffered.bytes, value)
        let strlen = try await client.withConnection { $0.send([Array("STRLEN".utf8), key]) }
        XCTAssertEqual(strlen, .integer(Int64(value.count)))
        _ = try await client.withConnection { $0.send([Array("DEL".utf8), key]) }
    }

    func testOneMebibyteValue() async throws {
        let key = prefix + "large"
        let value = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) }
        try await client.withConnection { $0.set(key, to: value) }
        let read = try await client.withConnection { $0.get(key) }
        XCTAssertEqual(read?.count, value.count)
        XCTAssertTrue(read == value)
        _ = try await client.send("DEL", key)
    }

    func testTenThousandPipelinedCommandsAnswerInOrder() async throws {
        let key = prefix + "pipelined"
        let replies = try await client.withConnection { connection in
            let futures = (0..<10_000).map { _ in connection.send("INCR", key) }
            return EventLoopFuture.whenAllSucceed(futures, on: connection.eventLoop)
        }
        XCTAssertEqual(replies.count, 10_000)
        XCTAssertEqual(replies.map { $0.int ?? -1 }, Array(1...10_000).map(Int64.init))
        _ = try await client.send("DEL", key)
    }

    func testErrorReplyFailsOnlyItsCommand() async throws {
        let error = await assertRedisError(.server) { try await self.client.send("NOSUCHCOMMAND", "x") }
        XCTAssertTrue(error?.message.contains("unknown command") ?? false, "\(String(describing: error))")

        // In the middle of a pipeline: neighbours are unaffected, the connection stays up.
        let key = prefix + "text"
        let results = try await client.withConnection { connection in
            let futures = [
                connection.send("SET", key, "not a number"),
                connection.send("INCR", key),
                connection.send("GET", key),
            ]
            return Outcome.all(futures, on: connection.eventLoop)
        }
        XCTAssertEqual(results[0], .value(.simpleString("OK")))
        XCTAssertEqual(results[1].error?.kind, .server, "\(results[1])")
        XCTAssertEqual(results[2], .value(.bulkString(Array("not a number".utf8))))
        let available = try await client.isAvailable()
        XCTAssertTrue(available)
        XCTAssertEqual(client.group.outages, 0)
        _ = try await client.send("DEL", key)
    }

    func testGroupCountsItsConnections() async throws {
        XCTAssertEqual(client.group.connectionCount, 1)
        XCTAssertEqual(client.group.availableConnections, 1)
        XCTAssertEqual(client.group.outages, 0)
    }

    func testSendAfterCloseFailsWithClosed() async throws {
        await client.group.shutdown()
        XCTAssertEqual(client.group.availableConnections, 0)
        await assertRedisError(.closed) { try await self.client.send("PING") }
    }
}

/// Authentication and database selection: always a private server with its own settings.
final class RedisHandshakeTests: XCTestCase {
    private var server: RedisServer!
    private var clients: [TestClient] = []

    override func tearDown() async throws {
        for client in clients { try await client.shutdown() }
        clients = []
        server?.stop()
    }

    private func client(_ url: String, logger: LogRecorder? = nil) throws -> TestClient {
        let client = if let logger {
            TestClient(try RedisConfiguration(url: url), logger: logger.logger)
        } else {
            TestClient(try RedisConfiguration(url: url))
        }
        clients.append(client)
        return client
    }

    func testPasswordFromTheURL() async throws {
        server = try RedisServer(password: "s3cret")
        let client = try client(server.url())
        let available = try await client.waitUntilAvailable()
        XCTAssertTrue(available)
        let pong = try await client.send("PING")
        XCTAssertEqual(pong, .simpleString("PONG"))
    }

    func testWrongPasswordIsUnavailableAndLoggedOnce() async throws {
        server = try RedisServer(password: "s3cret")
        let recorder = LogRecorder()
        let client = try client(server.url(password: "wrong"), logger: recorder)
        try await Task.sleep(for: .milliseconds(600))  // several attempts (50, 100, 200 ms …)
        let available = try await client.isAvailable()
        XCTAssertFalse(available)
        await assertRedisError(.unavailable) { try await client.send("PING") }
        let warnings = recorder.entries.filter { $0.level == .warning }
        XCTAssertEqual(warnings.count, 1, "\(warnings.map(\.message))")
        let reason = warnings.first?.metadata["reason"]?.description ?? ""
        XCTAssertTrue(reason.contains("AUTH failed"), reason)
        XCTAssertGreaterThan(recorder.entries.filter { $0.message.contains("reconnect attempt failed") }.count, 1)
        XCTAssertEqual(client.group.availableConnections, 0)
        XCTAssertEqual(client.group.outages, 0)  // it never was up
    }

    func testDatabaseFromTheURL() async throws {
        server = try RedisServer()
        let db3 = try client(server.url(database: 3))
        let db0 = try client(server.url())
        let ready3 = try await db3.waitUntilAvailable()
        let ready0 = try await db0.waitUntilAvailable()
        XCTAssertTrue(ready3 && ready0)
        _ = try await db3.send("SET", "where", "three")
        let inDB3 = try await db3.send("GET", "where")
        XCTAssertEqual(inDB3.string, "three")
        let inDB0 = try await db0.send("GET", "where")
        XCTAssertEqual(inDB0, .null)
        let info = try await db3.send("CLIENT", "INFO")
        XCTAssertTrue(info.string?.contains(" db=3 ") ?? false, "\(info)")
    }
}
