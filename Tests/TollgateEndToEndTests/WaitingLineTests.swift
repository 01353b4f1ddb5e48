import Foundation
import GRDB
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateDataPlane
import TollgateLedger
import TollgateServer
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// README "When the GPUs are full": a request that finds every instance it may use at its
/// `max_in_flight` waits in the gateway, by lane, until a slot frees; past its lane's timeout or
/// bound it gets 503 with `Retry-After`; a client that leaves the line leaves at once. On live
/// sockets, with the real ledger and simulated instances of small capacity.
final class WaitingLineTests: XCTestCase {
    var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    static let interactiveKey = "tg-test-interactive"
    static let batchKey = "tg-test-batch"

    struct Rig {
        let gateway: Gateway
        let sim: SimulatedInstance
        let group: MultiThreadedEventLoopGroup
        let port: Int
        let dir: URL

        func rows(_ sql: String) async throws -> [Row] {
            await gateway.dataPlane.flushUsage()
            await gateway.ledger!.writer.flush()
            let queue = try DatabaseQueue(path: dir.appendingPathComponent("ledger.sqlite").path)
            return try queue.read { db in try Row.fetchAll(db, sql: sql) }
        }

        func client() async throws -> HTTPTestClient { try await HTTPTestClient.connect(port: port, group: group) }

        /// The waiting line's figures, summed over the loops.
        func queues() async -> [QueueFigures.Key: QueueFigures] { await gateway.dataPlane.metricsSnapshot().queues }

        func waiting() async -> Int { await queues().values.reduce(0) { $0 + $1.waiting } }

        func stop() async {
            await gateway.dataPlane.shutdown(grace: .seconds(1))
            await gateway.ledger!.close()
            if sim.isRunning { try? await sim.stop() }
            try? await group.shutdownGracefully()
            try? FileManager.default.removeItem(at: dir)
        }
    }

    /// One instance answering in about `seconds` per request, `slots` at a time in the gateway
    /// (on one event loop, whose share is the whole limit); an interactive and a batch department.
    func start(slots: Int, seconds: Double, configure: (inout GatewayConfiguration) -> Void = { _ in }) async throws -> Rig {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var simulator = SimulatorConfiguration()
        simulator.timeToFirstToken = .milliseconds(Int64(seconds * 1000))
        simulator.capacity = 0  // the instance would take everything: only the gateway holds back
        let sim = try await SimulatedInstance.start(name: "qwen-0", port: 0, gpu: "0", configuration: simulator, group: group)
        var config = GatewayConfiguration()
        config.listen = ListenAddress(host: "127.0.0.1", port: 0)
        config.eventLoops = 1
        config.health.probePath = ""
        config.pools = [PoolConfiguration(name: "qwen", models: ["qwen2.5-0.5b-instruct"], instances: [
            InstanceConfiguration(name: sim.name, url: UpstreamURL(host: "127.0.0.1", port: sim.port), labels: ["gpu": "0"]),
        ], maxInFlight: slots)]
        config.departments = [
            DepartmentConfiguration(name: "customer-service", keys: [KeyEntry(sha256: KeyDigest.hex(of: Self.interactiveKey), label: "t")],
                                    priority: .interactive),
            DepartmentConfiguration(name: "analytics", keys: [KeyEntry(sha256: KeyDigest.hex(of: Self.batchKey), label: "t")], priority: .batch),
        ]
        configure(&config)
        XCTAssertEqual(ConfigurationLoader.validate(config, file: "test"), [])
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-queue-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var logger = Logger(label: "test")
        logger.logLevel = ProcessInfo.processInfo.environment["TOLLGATE_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        let settings = LedgerSettings(databasePath: dir.appendingPathComponent("ledger.sqlite").path,
                                      migrationsDirectory: repository.appendingPathComponent("migrations").path, replica: "test")
        let gateway = try Gateway(configuration: config, configPath: nil, ledger: settings, redis: nil, logger: logger)
        let port = try await gateway.dataPlane.start().port!
        return Rig(gateway: gateway, sim: sim, group: group, port: port, dir: dir)
    }

    func eventually(timeout: Duration = .seconds(5), _ condition: () async -> Bool) async -> Bool {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return await condition()
    }

    /// Six requests (two of them streams) at once, two slots: two reach the instance, four wait
    /// in the gateway — not in the instance — and every one is answered, streams as streams.
    func testRequestsWaitInTheGatewayAndAreAllAnswered() async throws {
        let rig = try await start(slots: 2, seconds: 0.6)
        async let answers = withThrowingTaskGroup(of: Answer.self) { group in
            for i in 0..<6 {
                group.addTask {
                    let client = try await rig.client()
                    defer { Task { await client.close() } }
                    return try await client.chat(key: Self.batchKey, content: "wait \(i)", stream: i % 3 == 0)
                }
            }
            var all: [Answer] = []
            for try await a in group { all.append(a) }
            return all
        }
        let queued = await eventually { await rig.waiting() == 4 }
        let seen = await rig.queues()
        XCTAssertTrue(queued, "four wait in the gateway: \(seen)")
        // The two sent may still be connecting: wait for them to arrive, then no more come.
        let two = await eventually { rig.sim.stats.inFlight == 2 }
        XCTAssertTrue(two, "the instance has the two it may have")
        let stillWaiting = await rig.waiting()
        XCTAssertEqual(stillWaiting, 4)
        XCTAssertEqual(rig.sim.stats.requests, 2, "and no more")
        let all = try await answers
        XCTAssertEqual(all.map(\.status), Array(repeating: 200, count: 6), all.map(\.body).joined(separator: "\n"))
        XCTAssertEqual(all.filter { $0.body.contains("data: [DONE]") }.count, 2, "streams waited and streamed")
        let figures = await rig.queues()[QueueFigures.Key(lane: .batch, department: "analytics")]
        XCTAssertEqual(figures?.dispatched, 4)
        XCTAssertEqual(figures?.waiting, 0)
        XCTAssertEqual(figures?.shed, 0)
        let rows = try await rig.rows("SELECT status, queue_ms FROM usage")
        XCTAssertEqual(rows.count, 6)
        XCTAssertEqual(rows.filter { ($0["queue_ms"] as Double?) != nil }.count, 4, "the rows of those that waited say how long")
        await rig.stop()
    }

    /// With one slot busy and batch requests waiting, an interactive request that comes later
    /// goes first; a header may lower a request's lane, never raise it.
    func testTheInteractiveLaneGoesFirst() async throws {
        let rig = try await start(slots: 1, seconds: 0.4) { config in config.admission.minSharePerMille = 0 }
        let order = OrderRecorder()
        func ask(_ key: String, _ name: String, headers: [(String, String)] = []) async throws -> Answer {
            let client = try await rig.client()
            let a = try await client.chat(key: key, content: name, headers: headers)
            order.append(name)
            await client.close()
            return a
        }
        async let busy = ask(Self.batchKey, "busy")
        _ = await eventually { rig.sim.stats.inFlight == 1 }
        async let b1 = ask(Self.batchKey, "batch-1")
        _ = await eventually { await rig.waiting() == 1 }
        async let raised = ask(Self.batchKey, "batch-asking-interactive", headers: [("x-tollgate-priority", "interactive")])
        _ = await eventually { await rig.waiting() == 2 }
        async let lowered = ask(Self.interactiveKey, "interactive-asking-batch", headers: [("x-tollgate-priority", "batch")])
        _ = await eventually { await rig.waiting() == 3 }
        async let urgent = ask(Self.interactiveKey, "interactive")
        _ = await eventually { await rig.waiting() == 4 }
        let statuses = try await [busy, b1, raised, lowered, urgent].map(\.status)
        XCTAssertEqual(statuses, [200, 200, 200, 200, 200])
        // Interactive first; then the batch lane by fair shares: analytics' first request, then
        // customer-service's lowered one (its department's turn), then analytics' second.
        XCTAssertEqual(order.names, ["busy", "interactive", "batch-1", "interactive-asking-batch", "batch-asking-interactive"])
        let q = await rig.queues()
        XCTAssertEqual(q[QueueFigures.Key(lane: .batch, department: "customer-service")]?.dispatched, 1, "lowered by its header")
        XCTAssertEqual(q[QueueFigures.Key(lane: .batch, department: "analytics")]?.dispatched, 2, "not raised by its header")
        await rig.stop()
    }

    /// An interactive client that sends its next request right after each answer finds the slot
    /// its last request left: it is kept from the waiting batch requests (`SlotReserve`), so it
    /// does not wait for a batch generation to end. The same run with `reserve_window: 0s` (strict
    /// priority only) shows the wait it removes: the batch request that took the slot is half a
    /// generation from its end.
    func testAnInteractiveClientKeepsItsSlotFromTheBatchFlood() async throws {
        func latencies(window: Duration) async throws -> [Double] {
            let rig = try await start(slots: 2, seconds: 0.5) { config in
                config.admission.minSharePerMille = 0
                config.admission.reserveWindow = window
            }
            let client = try await rig.client()
            let clock = ContinuousClock()
            var took: [Double] = []
            async let flood = withThrowingTaskGroup(of: Int.self) { group in
                // Half a generation after the interactive client's first request: the batch
                // generations end out of step with the interactive ones.
                try await Task.sleep(for: .milliseconds(250))
                for i in 0..<6 {
                    group.addTask {
                        let c = try await rig.client()
                        defer { Task { await c.close() } }
                        return try await c.chat(key: Self.batchKey, content: "batch \(i)").status
                    }
                }
                var statuses: [Int] = []
                for try await s in group { statuses.append(s) }
                return statuses
            }
            for i in 0..<4 {
                let start = clock.now
                let answer = try await client.chat(key: Self.interactiveKey, content: "next \(i)")
                XCTAssertEqual(answer.status, 200)
                took.append(Double((clock.now - start).components.attoseconds) / 1e18 + Double((clock.now - start).components.seconds))
            }
            let batch = try await flood
            XCTAssertEqual(batch, Array(repeating: 200, count: 6), "the batch requests are all answered")
            await client.close()
            await rig.stop()
            return took
        }
        let kept = try await latencies(window: .seconds(1))
        let strict = try await latencies(window: .zero)
        // The first request came before the flood; every next one arrives while batch requests wait.
        XCTAssertLessThan(kept.dropFirst().max()!, 0.65, "one generation (0.5 s), no wait: \(kept)")
        XCTAssertGreaterThan(strict.dropFirst().min()!, 0.65, "strict priority alone waits for a batch generation to end: \(strict)")
    }

    /// Past its lane's queue timeout a request gets 503 `queue_timeout` with `Retry-After`, in the
    /// OpenAI error format, and its own ledger row; past the lane's bound, 503 `queue_full` at once.
    func testDeadlineAndBoundShedWithRetryAfterAndARow() async throws {
        let rig = try await start(slots: 1, seconds: 1.5) { config in
            config.admission[.interactive] = LaneSettings(timeout: .milliseconds(300), maxQueue: 1)
        }
        let busyClient = try await rig.client()
        async let busy = busyClient.chat(key: Self.batchKey, content: "busy")
        _ = await eventually { rig.sim.stats.inFlight == 1 }
        let waiting = try await rig.client()
        async let late = waiting.chat(key: Self.interactiveKey, content: "waits too long")
        _ = await eventually { await rig.waiting() == 1 }
        let extra = try await rig.client()
        let full = try await extra.chat(key: Self.interactiveKey, content: "one too many")
        XCTAssertEqual(full.status, 503)
        XCTAssertEqual(full.errorCode, "queue_full", full.body)
        XCTAssertEqual(full.headers.first(name: "retry-after"), "1")
        let timedOut = try await late
        XCTAssertEqual(timedOut.status, 503)
        XCTAssertEqual(timedOut.errorCode, "queue_timeout", timedOut.body)
        XCTAssertEqual(timedOut.errorType, "server_error")
        XCTAssertEqual(timedOut.headers.first(name: "retry-after"), "1")
        let busyAnswer = try await busy
        XCTAssertEqual(busyAnswer.status, 200)
        for c in [busyClient, waiting, extra] { await c.close() }
        let rows = try await rig.rows("SELECT status, error_code, queue_ms, instance FROM usage WHERE department = 'customer-service' ORDER BY error_code")
        XCTAssertEqual(rows.map { $0["error_code"] as String? }, ["queue_full", "queue_timeout"])
        XCTAssertEqual(rows.map { $0["status"] as Int }, [503, 503])
        XCTAssertEqual(rows.map { $0["instance"] as String? }, [nil, nil])
        XCTAssertGreaterThanOrEqual(rows[1]["queue_ms"] as Double, 300)
        let figures = await rig.queues()[QueueFigures.Key(lane: .interactive, department: "customer-service")]
        XCTAssertEqual(figures?.timedOut, 1)
        XCTAssertEqual(figures?.full, 1)
        XCTAssertEqual(rig.sim.stats.requests, 1, "neither reached the instance")
        await rig.stop()
    }

    /// A client that disconnects while it waits leaves the line at once: the instance never sees
    /// it, its row says 499, and its quota reservation is given back (request and tokens).
    func testAClientThatLeavesTheLineLeavesAtOnce() async throws {
        let rig = try await start(slots: 1, seconds: 1.0) { config in
            config.departments[0].quota = QuotaLimits(requestsPerMinute: 100, tokensPerDay: 1_000_000)
        }
        let busyClient = try await rig.client()
        async let busy = busyClient.chat(key: Self.batchKey, content: "busy")
        _ = await eventually { rig.sim.stats.inFlight == 1 }
        do {
            let leaving = try RawSocket(port: rig.port)
            let body = #"{"model":"qwen2.5-0.5b-instruct","max_tokens":50,"messages":[{"role":"user","content":"leaving"}]}"#
            try leaving.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(Self.interactiveKey)\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)")
            let queued = await eventually { await rig.waiting() == 1 }
            XCTAssertTrue(queued)
            _ = consume leaving
        }
        let left = await eventually(timeout: .milliseconds(500)) { await rig.waiting() == 0 }
        XCTAssertTrue(left, "left the line before the slot freed")
        let busyAnswer = try await busy
        XCTAssertEqual(busyAnswer.status, 200)
        await busyClient.close()
        XCTAssertEqual(rig.sim.stats.requests, 1, "the instance never saw it")
        let rows = try await rig.rows("SELECT status, instance FROM usage WHERE department = 'customer-service'")
        XCTAssertEqual(rows.map { $0["status"] as Int }, [499])
        let quotas = rig.gateway.dataPlane.state.quotas
        var calendar = QuotaCalendar(timeZone: quotas.settings.timeZone)
        let usage = quotas.usage(department: 0, at: calendar.current(atMs: Int64(Date().timeIntervalSince1970 * 1000)))
        XCTAssertEqual(usage[.tokensPerDay] ?? 0, 0, "its tokens given back")
        XCTAssertEqual(usage[.requestsPerMinute] ?? 0, 0, "and its request")
        await rig.stop()
    }
}

/// The order in which answers came back, from several tasks.
final class OrderRecorder: @unchecked Sendable {
    // Guarded by `lock`.
    private let lock = NSLock()
    private var list: [String] = []
    func append(_ name: String) {
        lock.lock()
        list.append(name)
        lock.unlock()
    }
    var names: [String] {
        lock.lock()
        defer { lock.unlock() }
        return list
    }
}

/// `health.metrics_path`: the probes read the instances' own vLLM metrics (the simulator serves
/// the same names) and publish their load; an instance with requests waiting inside it counts
/// as full on a loop that already has one there.
final class InstanceMetricsTests: XCTestCase {
    func testProbesReadTheInstancesLoad() async throws {
        var simulator = SimulatorConfiguration()
        simulator.capacity = 1
        simulator.timeToFirstToken = .seconds(3)
        let gw = try await GatewayFixture.start(instances: 2, simulator: simulator) { config in
            config.health.metricsPath = "/metrics"
        }
        let idle = await gw.eventually { gw.dataPlane.state.availability[0].load == InstanceLoad(waiting: 0, running: 0, kvCacheUsage: 0) }
        XCTAssertTrue(idle, "\(String(describing: gw.dataPlane.state.availability[0].load))")
        // Two requests straight to instance 0, past the gateway: one runs, one waits inside it.
        let direct = [try await HTTPTestClient.connect(port: gw.instances[0].port, group: gw.group),
                      try await HTTPTestClient.connect(port: gw.instances[0].port, group: gw.group)]
        let body = #"{"model":"qwen2.5-0.5b-instruct","messages":[{"role":"user","content":"busy"}]}"#
        let pending = direct.map { client in Task { try? await client.send(.POST, "/v1/chat/completions", body: body) } }
        let busy = await gw.eventually { gw.dataPlane.state.availability[0].load == InstanceLoad(waiting: 1, running: 1, kvCacheUsage: 1) }
        XCTAssertTrue(busy, "\(String(describing: gw.dataPlane.state.availability[0].load))")
        XCTAssertTrue(gw.dataPlane.state.availability[0].load!.saturated, "requests wait inside it")
        XCTAssertEqual(gw.dataPlane.state.availability[1].load?.waiting, 0)
        for client in direct { await client.close() }
        for task in pending { _ = await task.value }
        let back = await gw.eventually { gw.dataPlane.state.availability[0].load?.waiting == 0 }
        XCTAssertTrue(back, "the instance's queue emptied when its clients left")
        await gw.stop()
    }
}
