import Foundation
import NIOCore
@testable import TollgateRedis
import TollgateTestSupport
import XCTest

/// Pipelined GET throughput on one connection. A figure, not an assertion:
/// runs only with `TOLLGATE_BENCH=1` (use a release build for a meaningful number).
final class RedisBenchmarkTests: XCTestCase {
    func testPipelinedGetThroughput() async throws {
        guard ProcessInfo.processInfo.environment["TOLLGATE_BENCH"] == "1" else {
            throw XCTSkip("set TOLLGATE_BENCH=1 to run the Redis benchmark")
        }
        let server = try RedisServer()
        defer { server.stop() }
        let client = TestClient(try RedisConfiguration(url: server.url()))
        let available = try await client.waitUntilAvailable()
        XCTAssertTrue(available)
        _ = try await client.send("SET", "bench", String(repeating: "x", count: 100))

        for flushesEachCommand in [false, true] {
            let get = [ByteBuffer(string: "GET"), ByteBuffer(string: "bench")]
            let batch = 2_000
            let rounds = 50
            _ = try await run(client, batch: batch, rounds: 2, flushesEachCommand: flushesEachCommand, get)  // warm up
            let elapsed = try await run(client, batch: batch, rounds: rounds, flushesEachCommand: flushesEachCommand, get)
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let rate = Double(batch * rounds) / seconds
            print("Redis pipelined GET, one connection, \(batch) in flight, flush \(flushesEachCommand ? "per command" : "per loop tick"): \(Int(rate)) commands/s")
        }
        try await client.shutdown()
    }

    private func run(
        _ client: TestClient, batch: Int, rounds: Int, flushesEachCommand: Bool, _ get: [ByteBuffer]
    ) async throws -> Duration {
        let started = ContinuousClock.now
        for _ in 0..<rounds {
            let count = try await client.withConnection { connection in
                connection.flushesEachCommand = flushesEachCommand
                let futures = (0..<batch).map { _ in connection.send(get) }
                return EventLoopFuture.whenAllSucceed(futures, on: connection.eventLoop).map(\.count)
            }
            XCTAssertEqual(count, batch)
        }
        return ContinuousClock.now - started
    }
}
