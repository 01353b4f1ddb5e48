import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateDataPlane
import TollgateLedger
import TollgateRedis
import TollgateServer
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// A whole gateway — both planes, a ledger in a temporary directory, the admin key file —
/// in front of two simulated instances, for the admin page and `/metrics` tests.
final class AdminHarness: Sendable {
    /// Department keys (in the configuration).
    static let supportKey = "tg-test-support-key"
    static let engineeringKey = "tg-test-engineering-key"
    /// `interns` has a monthly quota of 1 token: its first request passes, the next get 429.
    static let internsKey = "tg-test-interns-key"

    let group: MultiThreadedEventLoopGroup
    let instances: [SimulatedInstance]
    let gateway: Gateway
    let running: Task<Void, any Error>
    let dataPort: Int
    let adminPort: Int
    let adminKey: String
    let directory: URL
    let databasePath: String
    let configPath: String

    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
    }

    static func start(redis: String? = nil) async throws -> AdminHarness {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var simulator = SimulatorConfiguration()
        simulator.timeToFirstToken = .milliseconds(5)
        simulator.tokensPerSecond = 2000
        var sims: [SimulatedInstance] = []
        for i in 0..<2 {
            sims.append(try await SimulatedInstance.start(name: "qwen-\(i)", port: 0, gpu: "\(i)", configuration: simulator, group: group))
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-admin-page-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let adminKey = "tg-admin-\(UUID().uuidString)"
        try adminKey.write(to: dir.appendingPathComponent("admin.key"), atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: dir.appendingPathComponent("admin.key").path)
        let configFile = dir.appendingPathComponent("gateway.yaml")
        let yaml = """
            listen: {host: 127.0.0.1, port: 0}
            admin: {host: 127.0.0.1, port: 0}
            event_loops: 2
            auth: {admin_key_file: \(dir.appendingPathComponent("admin.key").path)}
            health: {probe_path: ""}
            pools:
              - name: p
                models: [qwen2.5-0.5b-instruct]
                instances:
                  - {name: qwen-0, url: "http://127.0.0.1:\(sims[0].port)", labels: {gpu: "0"}}
                  - {name: qwen-1, url: "http://127.0.0.1:\(sims[1].port)", labels: {gpu: "1"}, weight: 3}
            departments:
              - name: support
                keys: [{sha256: \(KeyDigest.hex(of: supportKey))}]
                quota: {tokens_per_day: 50000, tokens_per_month: 100000}
              - name: engineering
                keys: [{sha256: \(KeyDigest.hex(of: engineeringKey))}]
                route: [{match: {gpu: "1"}, weight: 1}]
              - name: interns
                keys: [{sha256: \(KeyDigest.hex(of: internsKey))}]
                quota: {tokens_per_month: 1}
            """
        try yaml.write(to: configFile, atomically: true, encoding: .utf8)
        var logger = Logger(label: "test")
        logger.logLevel = ProcessInfo.processInfo.environment["TOLLGATE_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        let database = dir.appendingPathComponent("ledger.sqlite").path
        let gateway = try Gateway(
            configuration: try ConfigurationLoader.load(path: configFile.path), configPath: configFile.path,
            ledger: LedgerSettings(databasePath: database, migrationsDirectory: repository.appendingPathComponent("migrations").path),
            redis: try redis.map { try RedisConfiguration(url: $0) },
            logger: logger)
        let ports = AsyncStream<(Int, Int)>.makeStream()
        let running = Task { try await gateway.run { data, admin in ports.continuation.yield((data.port!, admin.port!)) } }
        var iterator = ports.stream.makeAsyncIterator()
        let first = await iterator.next()
        let (dataPort, adminPort) = try XCTUnwrap(first)
        return AdminHarness(group: group, instances: sims, gateway: gateway, running: running, dataPort: dataPort, adminPort: adminPort,
                            adminKey: adminKey, directory: dir, databasePath: database, configPath: configFile.path)
    }

    private init(group: MultiThreadedEventLoopGroup, instances: [SimulatedInstance], gateway: Gateway, running: Task<Void, any Error>,
                 dataPort: Int, adminPort: Int, adminKey: String, directory: URL, databasePath: String, configPath: String) {
        self.group = group
        self.instances = instances
        self.gateway = gateway
        self.running = running
        self.dataPort = dataPort
        self.adminPort = adminPort
        self.adminKey = adminKey
        self.directory = directory
        self.databasePath = databasePath
        self.configPath = configPath
    }

    func data() async throws -> HTTPTestClient { try await HTTPTestClient.connect(port: dataPort, group: group) }
    func admin() async throws -> HTTPTestClient { try await HTTPTestClient.connect(port: adminPort, group: group) }

    var ledger: LedgerDatabase { gateway.ledger!.database }

    /// Every row handed over and committed.
    func flushLedger() async {
        await gateway.dataPlane.flushUsage()
        await gateway.ledger!.writer.flush()
    }

    func stop() async {
        running.cancel()
        _ = try? await running.value
        for sim in instances { try? await sim.stop() }
        try? await group.shutdownGracefully()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A skip, or under `TOLLGATE_TEST_STRICT=1` (scripts/test) a failure.
func missingTool(_ reason: String) -> any Error {
    if ProcessInfo.processInfo.environment["TOLLGATE_TEST_STRICT"] == "1" {
        return NSError(domain: "tollgate-test", code: 1, userInfo: [NSLocalizedDescriptionKey: reason])
    }
    return XCTSkip(reason)
}

/// Finds an executable on PATH.
func executableOnPath(_ names: [String]) -> URL? {
    let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/usr/local/bin").split(separator: ":")
    for name in names {
        for directory in paths {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return URL(fileURLWithPath: candidate) }
        }
    }
    return nil
}

/// Runs a process to its end without blocking a cooperative thread; stdout and stderr go
/// through files (no pipe to fill up). Terminated after `timeout`.
func runProcess(_ executable: URL, _ arguments: [String], timeout: Duration = .seconds(90)) async throws -> (status: Int32, out: String, err: String) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-proc-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let outURL = dir.appendingPathComponent("out"), errURL = dir.appendingPathComponent("err")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    process.standardOutput = out
    process.standardError = err
    let status: Int32 = try await withCheckedThrowingContinuation { continuation in
        process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
        do {
            try process.run()
        } catch {
            process.terminationHandler = nil
            continuation.resume(throwing: error)
            return
        }
        let pid = process.processIdentifier
        Task.detached {
            try? await Task.sleep(for: timeout)
            if process.isRunning { kill(pid, SIGKILL) }
        }
    }
    try? out.close()
    try? err.close()
    return (status, (try? String(contentsOf: outURL, encoding: .utf8)) ?? "", (try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
}

/// One static HTML page on a loopback port, whatever the path: the same site as the control
/// plane (SameSite cookies ignore the port), which a `file://` page would not be.
final class StaticPageServer: Sendable {
    let channel: any Channel
    var port: Int { channel.localAddress!.port! }

    static func start(html: String, group: any EventLoopGroup) async throws -> StaticPageServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(PageHandler(html: html))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return StaticPageServer(channel: channel)
    }

    private init(channel: any Channel) { self.channel = channel }

    func stop() async { try? await channel.close() }

    private final class PageHandler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let html: String
        init(html: String) { self.html = html }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            let body = context.channel.allocator.buffer(string: html)
            var head = HTTPResponseHead(version: .http1_1, status: .ok)
            head.headers.add(name: "content-type", value: "text/html; charset=utf-8")
            head.headers.add(name: "content-length", value: String(body.readableBytes))
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
