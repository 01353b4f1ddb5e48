import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateDataPlane
import TollgateServer
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// Hot reload from a configuration file: instances added and removed without a restart, a bad
/// file refused with the running configuration kept.
final class ReloadTests: XCTestCase {
    func yaml(ports: [Int], extra: String = "") -> String {
        var s = """
            listen: {host: 127.0.0.1, port: 0}
            event_loops: 2
            health: {probe_interval: 100ms, unhealthy_threshold: 1, healthy_threshold: 1}
            pools:
              - name: qwen
                models: [qwen2.5-0.5b-instruct]
                instances:

            """
        for (i, port) in ports.enumerated() {
            s += "      - {name: inst-\(port), url: \"http://127.0.0.1:\(port)\", labels: {gpu: \"\(i % 2)\"}}\n"
        }
        s += """
            departments:
              - name: engineering
                keys: [{sha256: \(KeyDigest.hex(of: TestKeys.engineering))}]

            """
        return s + extra
    }

    /// A request in flight on an instance that a reload removes still gets its answer, and then
    /// the gateway closes that connection: it does not keep a connection open to an instance it
    /// no longer uses. (It went back into the removed pool's idle list, which nothing read again:
    /// pool and connection held each other, and the socket stayed open for good.)
    func testTheConnectionToARemovedInstanceIsClosedOnceItsRequestEnds() async throws {
        let answer = #"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#
        let removed = try ScriptedUpstream { _ in
            var reply = ScriptedUpstream.Reply.json(answer)
            reply.delay = .milliseconds(400)
            return reply
        }
        let kept = try ScriptedUpstream { _ in .json(answer) }
        defer { removed.stop(); kept.stop() }
        func yaml(_ port: Int) -> String {
            """
            listen: {host: 127.0.0.1, port: 0}
            event_loops: 1
            health: {probe_path: ""}
            pools:
              - name: qwen
                models: [qwen2.5-0.5b-instruct]
                instances:
                  - {name: inst-\(port), url: "http://127.0.0.1:\(port)"}
            departments:
              - name: engineering
                keys: [{sha256: \(KeyDigest.hex(of: TestKeys.engineering))}]

            """
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-reload-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("gateway.yaml")
        try yaml(removed.port).write(to: file, atomically: true, encoding: .utf8)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let gateway = try Gateway(configuration: try ConfigurationLoader.load(path: dir.path), configPath: dir.path, logger: logger)
        let port = try await gateway.dataPlane.start().port!
        let client = try await HTTPTestClient.connect(port: port, group: group)
        let inFlight = Task { try await client.chat(key: TestKeys.engineering) }
        let reached = await eventuallyTrue { removed.requests.count == 1 }
        XCTAssertTrue(reached)
        try yaml(kept.port).write(to: file, atomically: true, encoding: .utf8)
        XCTAssertNoThrow(try gateway.reload().get())
        // Another client's request meanwhile: the loop takes up the new table (and drops the
        // removed instance's pool) before the first request's answer comes.
        let other = try await HTTPTestClient.connect(port: port, group: group)
        let next = try await other.chat(key: TestKeys.engineering).status
        XCTAssertEqual(next, 200)
        XCTAssertEqual(kept.requests.count, 1, "the next request goes to the instance that stays")
        XCTAssertEqual(removed.requests.count, 1)
        let status = try await inFlight.value.status
        XCTAssertEqual(status, 200, "answered by the instance it was sent to")
        await other.close()
        let closed = await eventuallyTrue { removed.openConnections == 0 }
        XCTAssertTrue(closed, "connections still open to the removed instance: \(removed.openConnections)")
        await client.close()
        await gateway.dataPlane.shutdown(grace: .seconds(1))
        try? await group.shutdownGracefully()
    }

    private func eventuallyTrue(timeout: Duration = .seconds(3), _ condition: () -> Bool) async -> Bool {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }

    func testAddRemoveAndRefuseWithoutRestart() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var sims: [SimulatedInstance] = []
        for i in 0..<3 { sims.append(try await SimulatedInstance.start(name: "s\(i)", port: 0, gpu: "0", configuration: .init(), group: group)) }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-reload-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let file = dir.appendingPathComponent("gateway.yaml")
        try yaml(ports: [sims[0].port, sims[1].port]).write(to: file, atomically: true, encoding: .utf8)

        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let gateway = try Gateway(configuration: try ConfigurationLoader.load(path: dir.path), configPath: dir.path, logger: logger)
        let port = try await gateway.dataPlane.start().port!
        let client = try await HTTPTestClient.connect(port: port, group: group)
        func burst(_ n: Int) async throws {
            for _ in 0..<n {
                let status = try await client.chat(key: TestKeys.engineering).status
                XCTAssertEqual(status, 200)
            }
        }
        try await burst(10)
        XCTAssertEqual(sims.map(\.stats.generations), [5, 5, 0])

        // A third instance (think: port 8009 on a free GPU).
        try yaml(ports: [sims[0].port, sims[1].port, sims[2].port]).write(to: file, atomically: true, encoding: .utf8)
        XCTAssertNoThrow(try gateway.reload().get())
        try await Task.sleep(for: .milliseconds(50))
        try await burst(30)
        XCTAssertGreaterThanOrEqual(sims[2].stats.generations, 9, "\(sims.map(\.stats.generations))")

        // A stream in flight on instance 0 while instance 0 is removed still completes.
        var slow = SimulatorConfiguration()
        slow.tokensPerSecond = 20
        for sim in sims { sim.update(slow) }
        let streaming = try await HTTPTestClient.connect(port: port, group: group)
        let inFlight = Task { try await streaming.chat(key: TestKeys.engineering, extra: #","max_tokens":8"#, stream: true) }
        try await Task.sleep(for: .milliseconds(100))
        try yaml(ports: [sims[1].port, sims[2].port]).write(to: file, atomically: true, encoding: .utf8)
        XCTAssertNoThrow(try gateway.reload().get())
        let answer = try await inFlight.value
        XCTAssertEqual(answer.status, 200)
        XCTAssertEqual(answer.events.last, "[DONE]")
        for sim in sims { sim.update(SimulatorConfiguration()) }
        let before = sims[0].stats.generations
        try await burst(20)
        XCTAssertEqual(sims[0].stats.generations, before, "a removed instance gets no new requests")

        // A bad file is refused; the running table stays.
        try (yaml(ports: [sims[1].port]) + "unknown_section: 1\n").write(to: file, atomically: true, encoding: .utf8)
        let generation = gateway.dataPlane.state.table.generation
        XCTAssertThrowsError(try gateway.reload().get()) { error in
            XCTAssertTrue("\(error)".contains("unknown_section: unknown key"), "\(error)")
        }
        try await Task.sleep(for: .milliseconds(50))
        XCTAssertEqual(gateway.dataPlane.state.table.generation, generation)
        XCTAssertEqual(gateway.dataPlane.state.table.instances.count, 2)
        try await burst(4)

        await client.close()
        await streaming.close()
        await gateway.dataPlane.shutdown(grace: .seconds(1))
        for sim in sims { try await sim.stop() }
        try await group.shutdownGracefully()
        try? FileManager.default.removeItem(at: dir)
    }
}
