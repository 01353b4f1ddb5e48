import Logging
import NIOCore
import NIOPosix

/// One connection to Redis, owned by one event loop. All methods must be called on that loop.
///
/// Commands are pipelined: many may be in flight on the connection, and they are answered in
/// order. Writes are batched and flushed once per event-loop tick.
///
/// Redis being down, slow or restarted never stalls the caller:
/// - while not connected, `send` fails at once with `RedisError.unavailable` (nothing queues
///   behind a dead connection);
/// - each command has `commandTimeout`; on a timeout it fails with `RedisError.timeout`, and as
///   RESP replies are ordered the connection is reset: every other command waiting on it fails
///   with `RedisError.unavailable`;
/// - the connection reconnects by itself with exponential backoff (50 ms doubling up to
///   `maxBackoff`, with jitter), sending `AUTH`/`SELECT` on every reconnect. An outage is logged
///   once at `warning` when it begins and once at `notice`, with its duration, when it ends.
///
/// An error reply (`-ERR …`) fails only its command, with `RedisError.server`.
///
/// Call `close()` when done: until then the connection keeps itself alive (and reconnecting).
public final class RedisConnection {
    /// The loop that owns this connection.
    public let eventLoop: any EventLoop
    /// Where and how this connection connects.
    public let configuration: RedisConfiguration

    private let logger: Logger
    private let stats: RedisConnectionStats?

    private enum State {
        /// `start()` not called yet.
        case idle
        /// Resolving the host and connecting over TCP.
        case connecting
        /// Connected; AUTH, SELECT and PING in flight.
        case handshaking(any Channel)
        /// Accepting commands.
        case ready(any Channel)
        /// Lost or never reached; the next attempt is scheduled.
        case waitingToReconnect(Scheduled<Void>)
        /// `close()` was called.
        case closed
    }

    private struct Pending {
        let promise: EventLoopPromise<RESPValue>
        let deadline: NIODeadline
    }

    private var state = State.idle
    /// Bumped whenever the current channel is abandoned; events from older channels, connect
    /// attempts and timers carry their generation and are ignored when it is stale.
    private var generation: UInt64 = 0
    private var pending = CircularBuffer<Pending>(initialCapacity: 64)
    /// One timer for the oldest waiting command (replies are ordered, so it is the first to expire).
    private var timeoutTask: Scheduled<Void>?
    private var encoder = RESPEncoder()
    private var outbound: ByteBuffer
    private var flushScheduled = false
    private var backoff: ReconnectBackoff
    /// Set while an outage is being reported (it was logged when it began).
    private var outageStartedAt: NIODeadline?

    /// Write and flush every command at once instead of once per event-loop tick (for measurements).
    var flushesEachCommand = false

    /// A connection on `eventLoop`; call `start()` (on that loop) to connect.
    public convenience init(configuration: RedisConfiguration, eventLoop: any EventLoop, logger: Logger) {
        self.init(configuration: configuration, eventLoop: eventLoop, logger: logger, stats: nil)
    }

    init(configuration: RedisConfiguration, eventLoop: any EventLoop, logger: Logger, stats: RedisConnectionStats?) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        var logger = logger
        logger[metadataKey: "redis"] = "\(configuration.host):\(configuration.port)/\(configuration.database)"
        self.logger = logger
        self.stats = stats
        self.outbound = ByteBufferAllocator().buffer(capacity: 4096)
        self.backoff = ReconnectBackoff(maximum: configuration.maxBackoff)
    }

    // MARK: - Public API

    /// Connects in the background (and reconnects whenever the connection is lost). Idempotent.
    public func start() {
        eventLoop.preconditionInEventLoop()
        guard case .idle = state else { return }
        connect()
    }

    /// `true` when connected, authenticated and ready for commands.
    public var isAvailable: Bool {
        eventLoop.preconditionInEventLoop()
        if case .ready = state { return true }
        return false
    }

    /// Sends one command, each argument binary-safe (`["SET", key, value]`).
    ///
    /// The future fails with `RedisError.unavailable` at once when not connected, `.timeout` after
    /// `commandTimeout`, `.server` for an error reply, `.closed` after `close()`.
    public func send(_ arguments: [ByteBuffer]) -> EventLoopFuture<RESPValue> {
        enqueue { try $0.encode(arguments, into: &$1) }
    }

    /// Sends one command given as byte arrays.
    public func send(_ arguments: [[UInt8]]) -> EventLoopFuture<RESPValue> {
        enqueue { try $0.encode(arguments, into: &$1) }
    }

    /// Sends one command given as UTF-8 strings: `send("INCRBY", key, "5")`.
    public func send(_ command: String, _ arguments: String...) -> EventLoopFuture<RESPValue> {
        send(command: [command] + arguments)
    }

    /// Sends one command given as UTF-8 strings.
    public func send(command arguments: [String]) -> EventLoopFuture<RESPValue> {
        enqueue { try $0.encode(arguments, into: &$1) }
    }

    /// Closes the connection and stops reconnecting. Waiting commands fail with `RedisError.closed`.
    /// Idempotent; the future completes when the socket is closed.
    public func close() -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        var channel: (any Channel)?
        switch state {
        case .closed:
            return eventLoop.makeSucceededVoidFuture()
        case .idle, .connecting:
            break
        case .waitingToReconnect(let task):
            task.cancel()
        case .handshaking(let current):
            channel = current
        case .ready(let current):
            channel = current
            stats?.connectionClosed()
        }
        state = .closed
        generation &+= 1
        timeoutTask?.cancel()
        timeoutTask = nil
        outbound.clear()
        outageStartedAt = nil
        logger.debug("Redis connection closed")
        failPending(first: .closed, rest: .closed)
        guard let channel else { return eventLoop.makeSucceededVoidFuture() }
        channel.close(promise: nil)
        return channel.closeFuture
    }

    // MARK: - Commands

    private func enqueue(_ encode: (inout RESPEncoder, inout ByteBuffer) throws -> Void) -> EventLoopFuture<RESPValue> {
        eventLoop.preconditionInEventLoop()
        switch state {
        case .ready:
            do {
                return try append(deadline: .now() + configuration.commandTimeout, encode)
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
        case .closed:
            return eventLoop.makeFailedFuture(RedisError.closed)
        case .idle, .connecting, .handshaking, .waitingToReconnect:
            return eventLoop.makeFailedFuture(RedisError.unavailable)
        }
    }

    /// Encodes a command into the outbound buffer and queues its promise (state already checked).
    private func append(
        deadline: NIODeadline,
        _ encode: (inout RESPEncoder, inout ByteBuffer) throws -> Void
    ) throws -> EventLoopFuture<RESPValue> {
        try encode(&encoder, &outbound)
        let promise = eventLoop.makePromise(of: RESPValue.self)
        pending.append(Pending(promise: promise, deadline: deadline))
        armTimeout()
        if flushesEachCommand {
            flushOutbound()
        } else if !flushScheduled {
            flushScheduled = true
            eventLoop.assumeIsolated().execute {
                self.flushScheduled = false
                self.flushOutbound()
            }
        }
        return promise.futureResult
    }

    private func flushOutbound() {
        guard outbound.readableBytes > 0 else { return }
        switch state {
        case .handshaking(let channel), .ready(let channel):
            channel.writeAndFlush(outbound, promise: nil)
            outbound.clear()
        case .idle, .connecting, .waitingToReconnect, .closed:
            outbound.clear()
        }
    }

    private func armTimeout() {
        guard timeoutTask == nil, let oldest = pending.first else { return }
        let generation = self.generation
        timeoutTask = eventLoop.assumeIsolated().scheduleTask(deadline: oldest.deadline) {
            self.timeoutFired(generation: generation)
        }
    }

    private func timeoutFired(generation: UInt64) {
        guard generation == self.generation else { return }
        timeoutTask = nil
        guard let oldest = pending.first else { return }
        if oldest.deadline <= .now() {
            let waited: String
            if case .handshaking = state {
                waited = "no answer to the connection handshake within \(Self.format(configuration.connectTimeout))"
            } else {
                waited = "no reply within the command timeout (\(Self.format(configuration.commandTimeout)))"
            }
            connectionFailed(reason: waited, timedOut: true)
        } else {
            armTimeout()
        }
    }

    private func failPending(first: RedisError, rest: RedisError) {
        guard !pending.isEmpty else { return }
        let failing = pending
        pending = CircularBuffer(initialCapacity: 64)
        var error = first
        for command in failing {
            command.promise.fail(error)
            error = rest
        }
    }

    // MARK: - Events from the channel handler

    /// A reply from the channel of `generation`. Returns `false` when that channel is no longer current.
    func received(_ value: RESPValue, generation: UInt64) -> Bool {
        guard generation == self.generation else { return false }
        guard let command = pending.popFirst() else {
            connectionFailed(reason: "Redis sent a reply that no command was waiting for")
            return false
        }
        if case .error(let message) = value {
            command.promise.fail(RedisError.server(message))
        } else {
            command.promise.succeed(value)
        }
        return generation == self.generation
    }

    /// The channel of `generation` failed or closed.
    func channelFailed(reason: String, generation: UInt64) {
        guard generation == self.generation else { return }
        connectionFailed(reason: reason)
    }

    // MARK: - Connecting

    private func connect() {
        generation &+= 1
        let generation = self.generation
        state = .connecting
        let connection = NIOLoopBound(self, eventLoop: eventLoop)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = RedisChannelHandler(connection: connection.value, generation: generation)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        resolve()
            .assumeIsolated()
            .flatMap { address in bootstrap.connect(to: address) }
            .whenComplete { result in
                self.connectCompleted(result, generation: generation)
            }
    }

    /// An IP address as is; a host name through getaddrinfo on NIO's blocking thread pool,
    /// never on the event loop.
    private func resolve() -> EventLoopFuture<SocketAddress> {
        let host = configuration.host
        let port = configuration.port
        if let address = try? SocketAddress(ipAddress: host, port: port) {
            return eventLoop.makeSucceededFuture(address)
        }
        return NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) {
            try SocketAddress.makeAddressResolvingHost(host, port: port)
        }
    }

    private func connectCompleted(_ result: Result<any Channel, any Error>, generation: UInt64) {
        guard generation == self.generation, case .connecting = state else {
            // Closed (or superseded) while connecting.
            if case .success(let channel) = result { channel.close(promise: nil) }
            return
        }
        switch result {
        case .failure(let error):
            connectionFailed(reason: Self.describe(error))
        case .success(let channel):
            state = .handshaking(channel)
            handshake(generation: generation)
        }
    }

    /// AUTH (with a password), SELECT (for a database other than 0) and PING, pipelined.
    private func handshake(generation: UInt64) {
        let deadline = NIODeadline.now() + configuration.connectTimeout
        var steps: [(name: String, arguments: [String])] = []
        if let password = configuration.password {
            if let username = configuration.username {
                steps.append(("AUTH", ["AUTH", username, password]))
            } else {
                steps.append(("AUTH", ["AUTH", password]))
            }
        }
        if configuration.database != 0 {
            steps.append(("SELECT", ["SELECT", String(configuration.database)]))
        }
        steps.append(("PING", ["PING"]))

        for (index, step) in steps.enumerated() {
            let future: EventLoopFuture<RESPValue>
            do {
                future = try append(deadline: deadline) { try $0.encode(step.arguments, into: &$1) }
            } catch {
                connectionFailed(reason: "\(step.name) could not be encoded: \(error)")
                return
            }
            let isLast = index == steps.count - 1
            future.assumeIsolated().whenComplete { result in
                guard generation == self.generation, case .handshaking(let channel) = self.state else { return }
                switch result {
                case .failure(let error):
                    let reason = (error as? RedisError).map { $0.message } ?? "\(error)"
                    self.connectionFailed(reason: "\(step.name) failed: \(reason)")
                case .success:
                    if isLast { self.becameReady(channel) }
                }
            }
        }
    }

    private func becameReady(_ channel: any Channel) {
        state = .ready(channel)
        backoff.reset()
        stats?.connectionBecameAvailable()
        if let began = outageStartedAt {
            outageStartedAt = nil
            logger.notice(
                "Redis is available again",
                metadata: ["outage_ms": "\((NIODeadline.now() - began).nanoseconds / 1_000_000)"]
            )
        } else {
            logger.debug("Redis connected")
        }
    }

    /// The current connection (or attempt) is lost: fail what waits on it and schedule a reconnect.
    private func connectionFailed(reason: String, timedOut: Bool = false) {
        var channel: (any Channel)?
        var wasReady = false
        switch state {
        case .ready(let current):
            channel = current
            wasReady = true
        case .handshaking(let current):
            channel = current
        case .connecting:
            break
        case .idle, .waitingToReconnect, .closed:
            return
        }
        generation &+= 1
        let generation = self.generation
        timeoutTask?.cancel()
        timeoutTask = nil
        outbound.clear()
        let delay = backoff.nextDelay()
        state = .waitingToReconnect(
            eventLoop.assumeIsolated().scheduleTask(in: delay) {
                self.reconnectTimerFired(generation: generation)
            }
        )
        channel?.close(promise: nil)
        if wasReady { stats?.connectionWentDown() }
        if outageStartedAt == nil {
            outageStartedAt = .now()
            logger.warning(
                "Redis is unavailable; bypassing it and reconnecting in the background",
                metadata: ["reason": "\(reason)"]
            )
        } else {
            logger.debug(
                "Redis reconnect attempt failed",
                metadata: ["reason": "\(reason)", "next_attempt_ms": "\(delay.nanoseconds / 1_000_000)"]
            )
        }
        // Last: the callbacks may send again, which now fails fast.
        failPending(first: timedOut ? .timeout : .unavailable, rest: .unavailable)
    }

    private func reconnectTimerFired(generation: UInt64) {
        guard generation == self.generation, case .waitingToReconnect = state else { return }
        connect()
    }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? IOError { return error.description }
        if error is ChannelError, case ChannelError.connectTimeout(let amount) = error {
            return "connect timed out after \(format(amount))"
        }
        return "\(error)"
    }

    private static func format(_ amount: TimeAmount) -> String {
        "\(amount.nanoseconds / 1_000_000) ms"
    }
}

/// Owned by one event loop: use it there (share a `RedisClientGroup` across threads instead).
@available(*, unavailable)
extension RedisConnection: Sendable {}
