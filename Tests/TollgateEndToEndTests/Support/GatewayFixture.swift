import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateDataPlane
import TollgateRedis
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// Keys of the test departments.
enum TestKeys {
    static let customerService = "tg-test-customer-service"
    static let engineering = "tg-test-engineering"
}

/// A chat completion's bytes as a raw client writes them: `body` framed by its length, with `key`.
func rawChatRequest(_ body: String, key: String = TestKeys.engineering) -> String {
    "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(key)\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)"
}

/// A client that sends `body` to the gateway on `port`, waits `after`, and closes its
/// connection without reading: it left while its request was under way.
func sendAndLeave(port: Int, _ body: String, after: Duration) async throws {
    let leaving = try RawSocket(port: port)
    try leaving.send(rawChatRequest(body))
    try await Task.sleep(for: after)
    _ = consume leaving
}

/// Simulated instances on free ports and a data plane in front of them, all in this process,
/// on live loopback sockets.
final class GatewayFixture: Sendable {
    let group: MultiThreadedEventLoopGroup
    let instances: [SimulatedInstance]
    let dataPlane: DataPlane
    let port: Int
    let configuration: GatewayConfiguration

    /// Instance `i` gets label `gpu: i % gpus`; `customer-service` sends 3/4 to GPU0.
    static func start(
        instances count: Int = 4, gpus: Int = 2, simulator: SimulatorConfiguration = SimulatorConfiguration(),
        redis: RedisConfiguration? = nil,
        configure: (inout GatewayConfiguration) -> Void = { _ in }, usageReporter: UsageReporter? = nil
    ) async throws -> GatewayFixture {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var sims: [SimulatedInstance] = []
        for i in 0..<count {
            sims.append(try await SimulatedInstance.start(name: "qwen-\(i)", port: 0, gpu: String(i % gpus), configuration: simulator, group: group))
        }
        var config = GatewayConfiguration()
        config.listen = ListenAddress(host: "127.0.0.1", port: 0)
        config.admin = ListenAddress(host: "127.0.0.1", port: 0)
        config.eventLoops = 2
        config.health.probeInterval = .milliseconds(100)
        config.health.probeTimeout = .milliseconds(500)
        config.health.failTimeout = .seconds(2)
        config.health.unhealthyThreshold = 1
        config.health.healthyThreshold = 1
        config.timeouts.connect = .milliseconds(500)
        config.timeouts.perTry = .seconds(5)
        config.pools = [PoolConfiguration(name: "qwen", models: ["qwen2.5-0.5b-instruct"], instances: sims.map { sim in
            InstanceConfiguration(name: sim.name, url: UpstreamURL(host: "127.0.0.1", port: sim.port), labels: ["gpu": sim.gpu])
        })]
        config.departments = [
            DepartmentConfiguration(
                name: "customer-service", keys: [KeyEntry(sha256: KeyDigest.hex(of: TestKeys.customerService), label: "test")],
                route: [RouteGroup(match: ["gpu": "0"], weight: 3), RouteGroup(match: [:], weight: 1)]),
            DepartmentConfiguration(name: "engineering", keys: [KeyEntry(sha256: KeyDigest.hex(of: TestKeys.engineering), label: "test")]),
        ]
        configure(&config)
        let problems = ConfigurationLoader.validate(config, file: "test")
        XCTAssertEqual(problems, [], "test configuration is valid")
        var logger = Logger(label: "tollgate-test")
        logger.logLevel = ProcessInfo.processInfo.environment["TOLLGATE_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        let dataPlane = DataPlane(table: RoutingTable(configuration: config), logger: logger, usageReporter: usageReporter)
        if let redis {
            dataPlane.attachRedis(RedisClientGroup(configuration: redis, group: dataPlane.group, logger: logger))
            for _ in 0..<250 where (dataPlane.redis?.availableConnections ?? 0) < config.eventLoops {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        let address = try await dataPlane.start()
        return GatewayFixture(group: group, instances: sims, dataPlane: dataPlane, port: address.port!, configuration: config)
    }

    private init(group: MultiThreadedEventLoopGroup, instances: [SimulatedInstance], dataPlane: DataPlane, port: Int, configuration: GatewayConfiguration) {
        self.group = group
        self.instances = instances
        self.dataPlane = dataPlane
        self.port = port
        self.configuration = configuration
    }

    func client() async throws -> HTTPTestClient { try await HTTPTestClient.connect(port: port, group: group) }

    func raw() async throws -> RawTestClient { try await RawTestClient.connect(port: port, group: group) }

    func stop() async {
        await dataPlane.shutdown(grace: .seconds(1))
        for sim in instances where sim.isRunning { try? await sim.stop() }
        try? await group.shutdownGracefully()
    }

    /// Generations each instance answered.
    var served: [Int] { instances.map(\.stats.generations) }

    /// Runs `total` requests over `concurrency` keep-alive connections; returns every outcome.
    func load(total: Int, concurrency: Int, _ request: @escaping @Sendable (HTTPTestClient, Int) async throws -> Answer) async throws -> [Result<Answer, any Error>] {
        let counter = Counter()
        return try await withThrowingTaskGroup(of: [Result<Answer, any Error>].self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var client = try await self.client()
                    var results: [Result<Answer, any Error>] = []
                    while let i = counter.next(below: total) {
                        do {
                            let answer = try await request(client, i)
                            results.append(.success(answer))
                            if answer.headers.first(name: "connection")?.lowercased() == "close" {
                                client = try await self.client()
                            }
                        } catch {
                            results.append(.failure(error))
                            await client.close()
                            client = try await self.client()
                        }
                    }
                    await client.close()
                    return results
                }
            }
            var all: [Result<Answer, any Error>] = []
            for try await part in group { all += part }
            return all
        }
    }

    /// Polls until `condition` holds or `timeout` passes.
    func eventually(timeout: Duration = .seconds(5), _ condition: () async -> Bool) async -> Bool {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return await condition()
    }
}

/// A counter shared by test tasks: hands out request numbers, or adds up outcomes.
final class Counter: @unchecked Sendable {
    // Guarded by `lock`.
    private let lock = NSLock()
    private var count = 0

    /// The next number below `limit`, or nil once they are all taken.
    func next(below limit: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard count < limit else { return nil }
        count += 1
        return count - 1
    }

    func add(_ n: Int) {
        lock.lock()
        count += n
        lock.unlock()
    }

    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }
}
