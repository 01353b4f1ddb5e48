import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// One simulated OpenAI-compatible inference server (a vLLM/FastAPI process serving a small model on one
/// GPU), listening on its own port and written with plain SwiftNIO channel handlers.
///
/// Endpoints: `GET /healthz` (also `/health`), `GET /v1/models`, `POST /v1/chat/completions`,
/// `POST /v1/completions`, `POST /v1/embeddings`; anything else is 404 (405 for a wrong method).
/// Latency, capacity, injected errors and hanging come from `SimulatorConfiguration`.
///
/// `stop()` kills it like a crashed process and `restart()` brings it back on the same port, so
/// tests can exercise health checks, retries and failover.
public final class SimulatedInstance: Sendable {
    /// The state of the listening socket.
    private enum Listener {
        case running(any Channel)
        /// A `stop()` or `restart()` is under way.
        case transitioning
        case stopped
    }

    /// The instance's name, e.g. `qwen-0`.
    public let name: String
    /// The GPU the instance pretends to run on, reported by `/healthz`.
    public let gpu: String
    /// The address the instance listens on.
    public let host: String
    /// The bound port; it stays the same across `stop()` and `restart()`.
    public let port: Int

    private let core: SimulatorCore
    private let group: any EventLoopGroup
    private let listener: NIOLockedValueBox<Listener>

    private init(name: String, gpu: String, host: String, port: Int, core: SimulatorCore, group: any EventLoopGroup, channel: any Channel) {
        self.name = name
        self.gpu = gpu
        self.host = host
        self.port = port
        self.core = core
        self.group = group
        self.listener = NIOLockedValueBox(.running(channel))
    }

    /// Starts listening on `host:port`; port 0 = pick a free port (read it back from `port`).
    ///
    /// - Parameters:
    ///   - name: the instance's name, e.g. `qwen-0`.
    ///   - host: the address to bind, `127.0.0.1` by default.
    ///   - port: the port to bind, or 0 for any free port.
    ///   - gpu: the GPU label reported by `/healthz`.
    ///   - configuration: the initial behaviour; change it later with `update(_:)`.
    ///   - group: the event loops serving the instance's connections.
    public static func start(
        name: String,
        host: String = "127.0.0.1",
        port: Int,
        gpu: String,
        configuration: SimulatorConfiguration,
        group: any EventLoopGroup
    ) async throws -> SimulatedInstance {
        let core = SimulatorCore(name: name, gpu: gpu, configuration: configuration)
        let channel = try await Self.bind(host: host, port: port, core: core, group: group)
        let boundPort = channel.localAddress?.port ?? port
        return SimulatedInstance(name: name, gpu: gpu, host: host, port: boundPort, core: core, group: group, channel: channel)
    }

    /// The instance's base URL, e.g. `http://127.0.0.1:8001`.
    public var baseURL: String {
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        return "http://\(host):\(self.port)"
    }

    /// A thread-safe snapshot of the counters.
    public var stats: SimulatorStats { self.core.stats.withLockedValue { $0 } }

    /// Zeroes the counters, except `inFlight`, which keeps counting the requests still open.
    public func resetStats() {
        self.core.stats.withLockedValue { $0 = SimulatorStats(inFlight: $0.inFlight) }
    }

    /// Generations waiting for a free slot (see `SimulatorConfiguration.capacity`).
    public var queuedGenerations: Int { self.core.scheduler.queued }

    /// Generations holding a slot: waiting for their first token, generating or streaming.
    public var activeGenerations: Int { self.core.scheduler.active }

    /// The configuration new requests are served with.
    public var configuration: SimulatorConfiguration { self.core.currentSettings.configuration }

    /// Replaces the configuration. It takes effect for requests that arrive afterwards; a higher
    /// `capacity` also admits queued requests at once. Turning `hang` off does not release requests
    /// already hanging.
    public func update(_ configuration: SimulatorConfiguration) {
        self.core.update(configuration)
    }

    /// Changes the configuration in place, e.g. `instance.update { $0.hang = true }`.
    public func update(_ change: (inout SimulatorConfiguration) -> Void) {
        var configuration = self.configuration
        change(&configuration)
        self.update(configuration)
    }

    /// Whether the instance is listening.
    public var isRunning: Bool {
        self.listener.withLockedValue { listener in
            if case .running = listener { return true }
            return false
        }
    }

    /// Kills the instance like a crashed process: closes the listener and every open connection at once
    /// (in-flight requests are cut, streams end without their terminating chunk). Stopping a stopped
    /// instance does nothing.
    public func stop() async throws {
        let channel: (any Channel)? = self.listener.withLockedValue { listener in
            guard case .running(let channel) = listener else { return nil }
            listener = .transitioning
            return channel
        }
        guard let channel else { return }
        let connections = self.core.stopAccepting()
        defer { self.listener.withLockedValue { $0 = .stopped } }
        for connection in connections {
            connection.close(mode: .all, promise: nil)
        }
        do {
            try await channel.close()
        } catch ChannelError.alreadyClosed {
            // The listener died with its event loop group: stopped all the same.
        }
        for connection in connections {
            try? await connection.closeFuture.get()
        }
    }

    /// Listens again on the same port after `stop()` (the socket uses `SO_REUSEADDR`), like a restarted
    /// process; counters and configuration are kept. Restarting a running instance does nothing.
    public func restart() async throws {
        let proceed = self.listener.withLockedValue { listener in
            guard case .stopped = listener else { return false }
            listener = .transitioning
            return true
        }
        guard proceed else { return }
        self.core.resumeAccepting()
        do {
            let channel = try await Self.bind(host: self.host, port: self.port, core: self.core, group: self.group)
            self.listener.withLockedValue { $0 = .running(channel) }
        } catch {
            _ = self.core.stopAccepting()
            self.listener.withLockedValue { $0 = .stopped }
            throw error
        }
    }

    private static func bind(host: String, port: Int, core: SimulatorCore, group: any EventLoopGroup) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            // uvicorn's default, as the vLLM servers it stands in for listen with: a burst of new
            // connections (1,000 streams at once) must not lose SYNs and wait out a 1 s retransmit.
            .serverChannelOption(.backlog, value: 2048)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                guard core.register(channel) else {
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(SimulatorHTTPHandler(core: core))
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}
