import Atomics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateRedis

/// The data plane: an HTTP/1.1 server on SwiftNIO channel handlers, one event loop per core.
/// A connection's requests are handled start to finish on the loop that accepted it, with that
/// loop's own upstream connections, balancers and counters (thread-per-core, share-nothing).
public final class DataPlane: Sendable {
    public let group: MultiThreadedEventLoopGroup
    public let monitor: HealthMonitor
    /// Publishes the snapshots every loop reads (on the monitor's loop).
    public let publisher: SnapshotPublisher
    /// One per event loop; sum them to read a total.
    public let counters: [LoopCounters]
    /// The fleet layer's counters (keys, events and rollups shared through Redis).
    public let fleetCounters = FleetCounters()
    let logger: Logger
    let contexts: [ObjectIdentifier: NIOLoopBound<LoopContext>]
    private let serverChannel = NIOLockedValueBox<(any Channel)?>(nil)
    private let generation = NIOLockedValueBox(1)

    /// - Parameters:
    ///   - table: the routing table to start with.
    ///   - clock: monotonic nanoseconds; tests may inject their own.
    public let usageSink: UsageSink?
    private let flushTasks = NIOLockedValueBox<[RepeatedTask]>([])
    private let redisGroup = NIOLockedValueBox<RedisClientGroup?>(nil)
    private let quotaSync: NIOLoopBoundBox<QuotaSync?>
    /// Threads for the few data-plane requests that must block (`/v1/usage` reads SQLite).
    let threadPool = NIOThreadPool(numberOfThreads: 2)
    /// Client connections open now, over all loops (`limits.max_connections`).
    private let openConnections = ManagedAtomic<Int>(0)

    /// - Parameters:
    ///   - usageSink: where usage rows go; nil runs without a ledger.
    ///   - usageReporter: answers `GET /v1/usage`; nil answers 404.
    public init(table: RoutingTable, logger: Logger, usageSink: UsageSink? = nil, usageReporter: UsageReporter? = nil,
                clock: @escaping MonotonicClock = { NIODeadline.now().uptimeNanoseconds }) {
        self.usageSink = usageSink
        threadPool.start()
        let threadPool = self.threadPool
        let loops = table.configuration.eventLoops > 0 ? table.configuration.eventLoops : System.coreCount
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: loops)
        self.logger = logger
        var all: [any EventLoop] = []
        for loop in group.makeIterator() { all.append(loop) }
        self.publisher = SnapshotPublisher(table: table, eventLoop: all[0], logger: logger)
        self.monitor = HealthMonitor(table: table, publisher: publisher, clock: clock, logger: logger)
        self.quotaSync = NIOLoopBoundBox.makeEmptyBox(valueType: QuotaSync.self, eventLoop: all[0])
        var contexts: [ObjectIdentifier: NIOLoopBound<LoopContext>] = [:]
        var counters: [LoopCounters] = []
        for (i, loop) in all.enumerated() {
            let c = LoopCounters()
            counters.append(c)
            let monitor = self.monitor
            var named = logger
            named[metadataKey: "loop"] = "\(i)"
            let loopLogger = named
            let loopCount = all.count
            // Build each context on its own loop: NIOLoopBound checks it.
            let bound = try! loop.submit {
                NIOLoopBound(LoopContext(eventLoop: loop, index: i, loopCount: loopCount, monitor: monitor, counters: c, logger: loopLogger,
                                         clock: clock, usageSink: usageSink, usageReporter: usageReporter, threadPool: threadPool),
                             eventLoop: loop)
            }.wait()
            contexts[ObjectIdentifier(loop)] = bound
        }
        self.contexts = contexts
        self.counters = counters
        self.generation.withLockedValue { $0 = table.generation }
        if usageSink != nil {
            // Each loop hands its usage records to the ledger's writer every 100 ms.
            var tasks: [RepeatedTask] = []
            for bound in contexts.values {
                tasks.append(bound.eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { _ in
                    bound.value.flushUsage()
                })
            }
            flushTasks.withLockedValue { $0 = tasks }
        }
    }

    /// Gives each event loop its own connection of `redis` (quotas shared by replicas, the cache).
    /// Not from an event loop (it waits for each loop).
    public func attachRedis(_ redis: RedisClientGroup) {
        redisGroup.withLockedValue { $0 = redis }
        let flights = SingleFlight()
        for bound in contexts.values {
            try? bound.eventLoop.submit {
                bound.value.redis = redis.connection(for: bound.eventLoop)
                bound.value.singleFlight = flights
            }.wait()
        }
        // Quota counters shared with the other replicas, in rounds on the monitor's loop.
        let monitor = self.monitor
        let counters = self.counters[0]
        let logger = self.logger
        let box = quotaSync
        try? monitor.eventLoop.submit {
            let sync = QuotaSync(monitor: monitor, redis: redis.connection(for: monitor.eventLoop), counters: counters, logger: logger)
            sync.start(interval: monitor.publisher.store.load().table.configuration.quotas.syncInterval)
            box.value = sync
        }.wait()
    }

    /// Empties every loop's in-process cache tier of one department's answers (all: nil),
    /// without touching Redis: a purge another replica made there (a fleet event).
    public func purgeLocalCaches(department: String?) async {
        await purgeLocalCaches(prefix: department.map { "tollgate:cache:department:\($0):" })
    }

    /// Empties every loop's in-process cache tier of the keys starting with `prefix` (all: nil).
    func purgeLocalCaches(prefix: String?) async {
        for bound in contexts.values {
            try? await bound.eventLoop.submit { bound.value.localCache.purge(prefix: prefix) }.get()
        }
    }

    /// The Redis connections attached, if any.
    public var redis: RedisClientGroup? { redisGroup.withLockedValue { $0 } }

    /// Hands every loop's pending usage records to the writer (shutdown, tests).
    public func flushUsage() async {
        for bound in contexts.values {
            try? await bound.eventLoop.submit { bound.value.flushUsage() }.get()
        }
    }

    /// The current routing snapshot.
    public var state: GatewayState { publisher.store.load() }

    /// Binds the listening socket and starts probing. Returns the bound address.
    @discardableResult
    public func start() async throws -> SocketAddress {
        let config = state.table.configuration
        let limits = config.limits
        let decoderBufferCap = max(64 * 1024, 2 * limits.maxHeaderBytes + 16 * 1024)
        let contexts = self.contexts
        let openConnections = self.openConnections
        let maxConnections = limits.maxConnections
        let idle = TimeAmount.nanoseconds(limits.idleTimeout.nanoseconds)
        let header = TimeAmount.nanoseconds(limits.headerTimeout.nanoseconds)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let loop = contexts[ObjectIdentifier(channel.eventLoop)]?.value else {
                        throw ChannelError.ioOnClosedChannel
                    }
                    if loop.draining { throw ChannelError.ioOnClosedChannel }
                    // `GatewayHandler` reads the bytes with the gateway's own strict request
                    // decoder (`RequestDecoder`, no handler between), times the connection
                    // (`ConnectionGuard`), frames answers with its `ResponseWriter` and handles
                    // pipelining: the only handler of a client connection. What it holds
                    // undecoded is capped: reads stop while a pipelined request waits, so only a
                    // head can accumulate, and a head is bounded by the header limits.
                    let remote = channel.remoteAddress?.ipAddress ?? "unknown"
                    let handler = GatewayHandler(loop: loop, idleTimeout: idle, headerTimeout: header, remoteAddress: remote,
                                                 limits: limits, inboundCap: decoderBufferCap)
                    try channel.pipeline.syncOperations.addHandler(handler)
                    // One shared count of open connections (one atomic per connection, not per
                    // request): past the limit the connection is answered 503 and closed.
                    let open = openConnections.wrappingIncrementThenLoad(ordering: .relaxed)
                    channel.closeFuture.whenComplete { _ in openConnections.wrappingDecrement(ordering: .relaxed) }
                    if open > maxConnections {
                        loop.counters.connectionsRefused.wrappingIncrement(ordering: .relaxed)
                        handler.refuseOnActive(.overloaded("too many connections (limits.max_connections = \(maxConnections))"))
                    }
                }
            }
        let channel = try await bootstrap.bind(host: config.listen.host, port: config.listen.port).get()
        serverChannel.withLockedValue { $0 = channel }
        monitor.startProbing()
        let address = channel.localAddress!
        logger.notice("data plane listening", metadata: ["address": "\(address)", "event_loops": "\(contexts.count)"])
        return address
    }

    /// Swaps in a validated configuration. In-flight requests keep the snapshot they started
    /// with. What is read only at start (`GatewayConfiguration.restartRequired(toApply:)`:
    /// addresses, event loops, Redis timeouts, the quota sync interval) keeps its running
    /// value, so that the table always describes what runs, and the change is logged.
    public func reload(_ configuration: GatewayConfiguration) -> RoutingTable {
        let next = generation.withLockedValue { g -> Int in
            g += 1
            return g
        }
        var config = configuration
        let current = state.table.configuration
        let pending = current.restartRequired(toApply: config)
        if !pending.isEmpty {
            logger.warning("these settings change only on restart; keeping the running ones",
                           metadata: ["restart_required": "\(pending.joined(separator: ","))"])
            config.listen = current.listen
            config.admin = current.admin
            config.eventLoops = current.eventLoops
            config.redis = current.redis
            config.quotas.syncInterval = current.quotas.syncInterval
            config.ledger = current.ledger
        }
        let table = RoutingTable(configuration: config, generation: next)
        monitor.install(table)
        // Installed on the monitor's loop, in submission order. Wait for it (a no-op queued
        // behind it), so that the table is in force when a reload answers; never on a loop.
        if !monitor.eventLoop.inEventLoop { try? monitor.eventLoop.submit {}.wait() }
        return table
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish within `grace`, close
    /// every connection, stop the loops.
    public func shutdown(grace: Duration) async {
        let server = serverChannel.withLockedValue { c -> (any Channel)? in
            defer { c = nil }
            return c
        }
        try? await server?.close()
        for bound in contexts.values {
            try? await bound.eventLoop.submit {
                let loop = bound.value
                loop.draining = true
                for handler in loop.connections.values where handler.isIdle { handler.closeNow() }
            }.get()
        }
        let deadline = ContinuousClock.now + grace
        while ContinuousClock.now < deadline && activeRequests > 0 {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if activeRequests > 0 {
            logger.warning("grace period over; closing connections with requests in flight", metadata: ["in_flight": "\(activeRequests)"])
        }
        for bound in contexts.values {
            try? await bound.eventLoop.submit {
                let loop = bound.value
                for handler in loop.connections.values { handler.closeNow() }
                loop.closeIdleUpstreams()
            }.get()
        }
        for task in flushTasks.withLockedValue({ $0 }) { task.cancel() }
        await flushUsage()
        monitor.stop()
        publisher.stop()
        let sync = quotaSync
        try? await monitor.eventLoop.submit { sync.value?.stop() }.get()
        if let redis { await redis.shutdown() }
        try? await threadPool.shutdownGracefully()
        try? await group.shutdownGracefully()
    }

    /// Requests being forwarded right now, over all loops.
    public var activeRequests: Int { counters.reduce(0) { $0 + $1.activeRequests.load(ordering: .relaxed) } }
}
