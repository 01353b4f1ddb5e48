import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// Three (or more) `tollgate serve` processes — the real binary — on one private Redis, each
/// with its own ledger, in front of the same simulated instances; the same configuration and
/// the same admin key, as replicas behind a balancer run.
final class FleetHarness: @unchecked Sendable {
    static let adminKey = "tg-admin-fleet-\(UUID().uuidString)"
    /// Departments: `engineering` (600 requests a minute), `support` (no quota); both keys in
    /// the configuration, so every replica knows them from the start.
    static let engineeringKey = TestKeys.engineering
    static let supportKey = TestKeys.customerService

    struct Replica: @unchecked Sendable {  // Process is a thread-safe handle
        let name: String
        let process: Process
        let dataPort: Int
        let adminPort: Int
        let database: String
        let log: URL
    }

    let redis: RedisServer
    let group: MultiThreadedEventLoopGroup
    let instances: [SimulatedInstance]
    let directory: URL
    let configPath: String
    private(set) var replicas: [Replica] = []

    static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("tollgate")
    }

    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
    }

    static func start(replicas count: Int = 3, requestsPerMinute: Int = 600, lease: String = "1%") async throws -> FleetHarness {
        let redis = try RedisServer()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let simulator = SimulatorConfiguration()  // answers at once, no capacity limit
        var sims: [SimulatedInstance] = []
        for i in 0..<2 {
            sims.append(try await SimulatedInstance.start(name: "qwen-\(i)", port: 0, gpu: "\(i)", configuration: simulator, group: group))
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-fleet-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let config = dir.appendingPathComponent("gateway.yaml")
        try """
            listen: {host: 127.0.0.1, port: 0}
            admin: {host: 127.0.0.1, port: 0}
            event_loops: 2
            health: {probe_path: ""}
            cache: {mode: deterministic, ttl: 10m}
            quotas: {lease: "\(lease)", sync_interval: 100ms}
            pools:
              - name: p
                models: [qwen2.5-0.5b-instruct]
                instances:
                  - {name: qwen-0, url: "http://127.0.0.1:\(sims[0].port)"}
                  - {name: qwen-1, url: "http://127.0.0.1:\(sims[1].port)"}
            departments:
              - name: engineering
                keys: [{sha256: \(KeyDigest.hex(of: engineeringKey))}]
                quota: {requests_per_minute: \(requestsPerMinute)}
              - name: support
                keys: [{sha256: \(KeyDigest.hex(of: supportKey))}]
            """.write(to: config, atomically: true, encoding: .utf8)
        let harness = FleetHarness(redis: redis, group: group, instances: sims, directory: dir, configPath: config.path)
        for i in 0..<count { try await harness.startReplica(name: "r\(i)") }
        return harness
    }

    private init(redis: RedisServer, group: MultiThreadedEventLoopGroup, instances: [SimulatedInstance], directory: URL, configPath: String) {
        self.redis = redis
        self.group = group
        self.instances = instances
        self.directory = directory
        self.configPath = configPath
    }

    private func startReplica(name: String) async throws {
        let dataPort = try freePort(), adminPort = try freePort()
        let database = directory.appendingPathComponent("\(name).sqlite").path
        let log = directory.appendingPathComponent("\(name).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let output = try FileHandle(forWritingTo: log)
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = [
            "serve", "--config", configPath, "--port", String(dataPort), "--admin-port", String(adminPort),
            "--database", database, "--migrations", Self.repository.appendingPathComponent("migrations").path,
            "--replica", name, "--redis", redis.url(), "--log-level", ProcessInfo.processInfo.environment["TOLLGATE_TEST_LOG"] ?? "notice",
        ]
        var environment = ProcessInfo.processInfo.environment
        environment["TOLLGATE_ADMIN_KEY"] = Self.adminKey
        process.environment = environment
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let replica = Replica(name: name, process: process, dataPort: dataPort, adminPort: adminPort, database: database, log: log)
        replicas.append(replica)
        // Ready when the control plane answers and the fleet subscription is up.
        let ready = await waitUntil(timeout: .seconds(30)) {
            guard let a = try? await self.get(replica, "/metrics") else { return false }
            return a.status == 200 && a.body.contains("tollgate_fleet_subscribed 1")
        }
        guard ready else {
            throw NSError(domain: "fleet", code: 1, userInfo: [NSLocalizedDescriptionKey:
                "replica \(name) did not become ready: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")"])
        }
    }

    func stop() async {
        for r in replicas where r.process.isRunning { kill(r.process.processIdentifier, SIGTERM) }
        for r in replicas {
            let deadline = Date().addingTimeInterval(15)
            while r.process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
            if r.process.isRunning { kill(r.process.processIdentifier, SIGKILL) }
        }
        for sim in instances { try? await sim.stop() }
        try? await group.shutdownGracefully()
        redis.stop()
        if ProcessInfo.processInfo.environment["TOLLGATE_TEST_KEEP"] == nil { try? FileManager.default.removeItem(at: directory) }
    }

    // MARK: - Talking to the replicas

    func data(_ r: Replica) async throws -> HTTPTestClient { try await HTTPTestClient.connect(port: r.dataPort, group: group) }
    func admin(_ r: Replica) async throws -> HTTPTestClient { try await HTTPTestClient.connect(port: r.adminPort, group: group) }

    /// One request on a fresh connection to the control plane.
    func get(_ r: Replica, _ path: String, headers: [(String, String)] = []) async throws -> Answer {
        let client = try await admin(r)
        defer { Task { await client.close() } }
        return try await client.send(.GET, path, headers: headers, timeout: .seconds(10))
    }

    func adminCall(_ r: Replica, _ method: HTTPMethod, _ path: String, body: String? = nil) async throws -> Answer {
        let client = try await admin(r)
        defer { Task { await client.close() } }
        return try await client.send(method, path, body: body, headers: [("authorization", "Bearer \(Self.adminKey)")], timeout: .seconds(10))
    }

    /// A chat request on a fresh connection to the data plane.
    func chat(_ r: Replica, key: String, content: String = "hello", extra: String = "") async throws -> Answer {
        let client = try await data(r)
        defer { Task { await client.close() } }
        return try await client.chat(key: key, content: content, extra: extra)
    }

    /// A Redis command from the test, through `redis-cli` (its raw output).
    func redisCLI(_ arguments: [String]) async throws -> String {
        guard let cli = executableOnPath(["redis-cli"]) else { throw missingTool("redis-cli is not installed") }
        let r = try await runProcess(cli, ["-h", "127.0.0.1", "-p", String(redis.port)] + arguments, timeout: .seconds(10))
        return r.out
    }

    /// Every replica's ledger rows (all departments, this month), as `tollgate report` merges them.
    func mergedRequests() async throws -> Int {
        var arguments = ["report", "--format", "json", "--config", configPath, "--migrations",
                         Self.repository.appendingPathComponent("migrations").path]
        for r in replicas { arguments += ["--database", r.database] }
        let report = try await runProcess(Self.executable, arguments)
        let rows = (try? JSONSerialization.jsonObject(with: Data(report.out.utf8))) as? [[String: Any]] ?? []
        return rows.reduce(0) { $0 + ($1["requests"] as? Int ?? 0) }
    }

    func logs(_ r: Replica) -> String { (try? String(contentsOf: r.log, encoding: .utf8)) ?? "" }

    private func freePort() throws -> Int {
        let channel = try ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).wait()
        let port = channel.localAddress!.port!
        try channel.close().wait()
        return port
    }
}

/// Polls `condition` until it holds or `timeout` passes; true when it held.
func waitUntil(timeout: Duration = .seconds(2), every: Duration = .milliseconds(20), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: every)
    }
    return await condition()
}
