import Atomics
import Logging
import NIOCore

/// One `RedisConnection` per event loop of a group (thread-per-core, share-nothing), plus
/// shared, lock-free status for metrics.
///
/// The connections start connecting when the group is created. Call `shutdown()` before the
/// event loop group shuts down.
public final class RedisClientGroup: Sendable {
    /// The configuration every connection uses.
    public let configuration: RedisConfiguration

    private let loops: [any EventLoop]
    private let connections: [ObjectIdentifier: NIOLoopBoundBox<RedisConnection>]
    private let stats = RedisConnectionStats()

    /// Creates (and starts) one connection on every loop of `group`.
    public init(configuration: RedisConfiguration, group: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        var loops: [any EventLoop] = []
        var connections: [ObjectIdentifier: NIOLoopBoundBox<RedisConnection>] = [:]
        for loop in group.makeIterator() {
            let box = NIOLoopBoundBox.makeBoxSendingValue(
                RedisConnection(configuration: configuration, eventLoop: loop, logger: logger, stats: stats),
                eventLoop: loop
            )
            loops.append(loop)
            connections[ObjectIdentifier(loop)] = box
            loop.execute { box.value.start() }
        }
        self.loops = loops
        self.connections = connections
    }

    /// The connection owned by `eventLoop`. Call on that loop only, and use the connection there.
    public func connection(for eventLoop: any EventLoop) -> RedisConnection {
        guard let box = connections[ObjectIdentifier(eventLoop)] else {
            preconditionFailure("\(eventLoop) is not a loop of this RedisClientGroup's event loop group")
        }
        return box.value
    }

    /// How many connections are connected and ready now. Readable from any thread.
    public var availableConnections: Int { stats.available.load(ordering: .relaxed) }

    /// How many times a connection went from ready to down. Readable from any thread.
    public var outages: Int { stats.outages.load(ordering: .relaxed) }

    /// The number of connections (one per event loop).
    public var connectionCount: Int { loops.count }

    /// Closes every connection; commands still waiting fail with `RedisError.closed`.
    public func shutdown() async {
        var closed: [EventLoopFuture<Void>] = []
        for loop in loops {
            guard let box = connections[ObjectIdentifier(loop)] else { continue }
            closed.append(loop.flatSubmit { box.value.close() })
        }
        for future in closed {
            try? await future.get()
        }
    }
}
