import Atomics
import Foundation
import NIOCore
import TollgateCore
@testable import TollgateDataPlane
import TollgateRedis
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// Nothing a request makes outlives it. A running exchange and its timers, and an exchange and
/// its upstream connection, hold each other strongly (weak references cost every retain of a
/// hot object the runtime's slow path): every way a request ends must let go. Counted with the
/// debug builds' `LiveObjects`, on a gateway that keeps running.
final class LifetimeTests: XCTestCase {
    func testNoExchangeOrHandlerOutlivesItsRequestOrConnection() async throws {
        #if DEBUG
        let redis = try RedisServer()
        defer { redis.stop() }
        var simulator = SimulatorConfiguration()
        simulator.tokensPerSecond = 100
        simulator.defaultCompletionTokens = 4
        let gw = try await GatewayFixture.start(instances: 2, simulator: simulator, redis: try RedisConfiguration(url: redis.url())) { config in
            config.timeouts.perTry = .milliseconds(300)
            config.departments[1].quota = QuotaLimits(tokensPerDay: 1_000_000)
        }
        let exchangesBefore = LiveObjects.exchanges.load(ordering: .relaxed)
        let handlersBefore = LiveObjects.handlers.load(ordering: .relaxed)

        // Forwarded, streamed, cached (a miss, then a hit), refused.
        let client = try await gw.client()
        for _ in 0..<4 { let status = try await client.chat(key: TestKeys.engineering).status; XCTAssertEqual(status, 200) }
        let streamed = try await client.chat(key: TestKeys.engineering, stream: true).status; XCTAssertEqual(streamed, 200)
        for _ in 0..<2 { let status = try await client.chat(key: TestKeys.engineering, extra: #","temperature":0"#).status; XCTAssertEqual(status, 200) }
        let refused = try await client.chat(key: "sk-wrong").status; XCTAssertEqual(refused, 401)
        // Its connection is open and idle: no request runs, so no exchange is alive.
        let idle = await gw.eventually { LiveObjects.exchanges.load(ordering: .relaxed) <= exchangesBefore }
        XCTAssertTrue(idle, "exchanges alive on an idle connection: \(LiveObjects.exchanges.load(ordering: .relaxed) - exchangesBefore)")

        // A stream its client leaves half-way (100 tokens at 100/s).
        try await sendAndLeave(port: gw.port, #"{"model":"qwen2.5-0.5b-instruct","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"long"}]}"#,
                               after: .milliseconds(200))

        // A try that times out on a wedged instance and is answered by the other.
        var hung = simulator
        hung.hang = true
        gw.instances[0].update(hung)
        for _ in 0..<2 { let status = try await client.chat(key: TestKeys.engineering).status; XCTAssertEqual(status, 200) }
        gw.instances[0].update(simulator)

        // A client that leaves while its cache lookup waits for Redis.
        let sleeper = try RawSocket(port: redis.port)
        try sleeper.send("DEBUG SLEEP 0.5\r\n")
        try await Task.sleep(for: .milliseconds(50))
        try await sendAndLeave(port: gw.port, #"{"model":"qwen2.5-0.5b-instruct","temperature":0,"messages":[{"role":"user","content":"later"}]}"#,
                               after: .milliseconds(100))
        try await Task.sleep(for: .milliseconds(600))
        _ = sleeper

        // Pipelined requests on one connection, closed by the client after the answers.
        do {
            let pipelined = try RawSocket(port: gw.port)
            let request = rawChatRequest(#"{"model":"qwen2.5-0.5b-instruct","messages":[{"role":"user","content":"p"}]}"#)
            try pipelined.send(request + request + request)
            for _ in 0..<3 { let status = try pipelined.readResponse(method: "POST").status; XCTAssertEqual(status, 200) }
        }
        await client.close()

        // Every connection is closed and every request ended: all of them are gone.
        let released = await gw.eventually {
            LiveObjects.exchanges.load(ordering: .relaxed) <= exchangesBefore
                && LiveObjects.handlers.load(ordering: .relaxed) <= handlersBefore
        }
        XCTAssertTrue(released, "exchanges alive: \(LiveObjects.exchanges.load(ordering: .relaxed) - exchangesBefore), "
                      + "handlers alive: \(LiveObjects.handlers.load(ordering: .relaxed) - handlersBefore)")
        await gw.stop()
        #else
        throw XCTSkip("counted in debug builds only")
        #endif
    }
}
