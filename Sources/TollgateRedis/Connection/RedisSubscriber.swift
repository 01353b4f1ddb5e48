import Logging
import NIOCore
import NIOPosix

/// A connection in Redis' pub/sub mode: subscribed to some channels, it receives their
/// messages as they are published. A subscribed connection takes no other commands (Redis
/// answers only (P)SUBSCRIBE, UNSUBSCRIBE and PING there, and its pushes are not replies to
/// anything), so it is a connection of its own, not one of `RedisConnection`'s.
///
/// Owned by one event loop: call everything there; `onMessage` and `onSubscribed` run there.
/// Like `RedisConnection` it reconnects by itself with backoff (AUTH/SELECT each time) and logs
/// an outage once. After every (re)subscription `onSubscribed` runs: messages published while
/// the connection was down are lost (pub/sub keeps nothing), so the owner reads the state they
/// announce again then. A PING every `keepAlive` finds a connection that died silently.
public final class RedisSubscriber {
    public let eventLoop: any EventLoop
    public let configuration: RedisConfiguration
    public let channels: [String]

    private let logger: Logger
    private let onMessage: (_ channel: String, _ payload: [UInt8]) -> Void
    private let onSubscribed: () -> Void
    private let onLost: () -> Void
    private let keepAlive: TimeAmount

    private enum State {
        case idle
        case connecting
        /// AUTH/SELECT/SUBSCRIBE sent; not every channel confirmed yet.
        case subscribing(any Channel, confirmed: Int)
        case subscribed(any Channel)
        case waitingToReconnect(Scheduled<Void>)
        case closed
    }

    private var state = State.idle
    private var generation: UInt64 = 0
    private var backoff: ReconnectBackoff
    private var outageStartedAt: NIODeadline?
    private var handshakeTimer: Scheduled<Void>?
    private var pingTask: RepeatedTask?
    private var awaitingPong = false
    /// Replies still expected for AUTH and SELECT before the subscription confirmations.
    private var pendingHandshakeReplies = 0

    public init(configuration: RedisConfiguration, channels: [String], eventLoop: any EventLoop, logger: Logger,
                keepAlive: TimeAmount = .seconds(5),
                onSubscribed: @escaping () -> Void, onLost: @escaping () -> Void = {},
                onMessage: @escaping (_ channel: String, _ payload: [UInt8]) -> Void) {
        precondition(!channels.isEmpty)
        self.configuration = configuration
        self.channels = channels
        self.eventLoop = eventLoop
        var logger = logger
        logger[metadataKey: "redis"] = "\(configuration.host):\(configuration.port)/\(configuration.database)"
        logger[metadataKey: "subscriber"] = "\(channels.joined(separator: ","))"
        self.logger = logger
        self.keepAlive = keepAlive
        self.onSubscribed = onSubscribed
        self.onLost = onLost
        self.onMessage = onMessage
        self.backoff = ReconnectBackoff(maximum: configuration.maxBackoff)
    }

    /// Connects in the background, and again whenever the connection is lost. Idempotent.
    public func start() {
        eventLoop.preconditionInEventLoop()
        guard case .idle = state else { return }
        connect()
    }

    /// True while every channel is subscribed.
    public var isSubscribed: Bool {
        eventLoop.preconditionInEventLoop()
        if case .subscribed = state { return true }
        return false
    }

    /// Closes the connection and stops reconnecting.
    public func close() -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        var channel: (any Channel)?
        switch state {
        case .closed: return eventLoop.makeSucceededVoidFuture()
        case .idle, .connecting: break
        case .waitingToReconnect(let task): task.cancel()
        case .subscribing(let c, _), .subscribed(let c): channel = c
        }
        state = .closed
        generation &+= 1
        stopTimers()
        guard let channel else { return eventLoop.makeSucceededVoidFuture() }
        channel.close(promise: nil)
        return channel.closeFuture
    }

    // MARK: - Connecting

    private func connect() {
        generation &+= 1
        let generation = self.generation
        state = .connecting
        let subscriber = NIOLoopBound(self, eventLoop: eventLoop)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        SubscriberChannelHandler(subscriber: subscriber.value, generation: generation))
                }
            }
        resolve().assumeIsolated().flatMap { bootstrap.connect(to: $0) }.whenComplete { result in
            self.connectCompleted(result, generation: generation)
        }
    }

    private func resolve() -> EventLoopFuture<SocketAddress> {
        let host = configuration.host, port = configuration.port
        if let address = try? SocketAddress(ipAddress: host, port: port) { return eventLoop.makeSucceededFuture(address) }
        return NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) { try SocketAddress.makeAddressResolvingHost(host, port: port) }
    }

    private func connectCompleted(_ result: Result<any Channel, any Error>, generation: UInt64) {
        guard generation == self.generation, case .connecting = state else {
            if case .success(let channel) = result { channel.close(promise: nil) }
            return
        }
        switch result {
        case .failure(let error):
            failed(reason: (error as? IOError)?.description ?? "\(error)")
        case .success(let channel):
            state = .subscribing(channel, confirmed: 0)
            var commands: [[String]] = []
            if let password = configuration.password {
                commands.append(configuration.username.map { ["AUTH", $0, password] } ?? ["AUTH", password])
            }
            if configuration.database != 0 { commands.append(["SELECT", String(configuration.database)]) }
            pendingHandshakeReplies = commands.count
            commands.append(["SUBSCRIBE"] + channels)
            var encoder = RESPEncoder()
            var out = channel.allocator.buffer(capacity: 256)
            do {
                for command in commands { try encoder.encode(command, into: &out) }
            } catch {
                failed(reason: "the subscription could not be encoded: \(error)")
                return
            }
            channel.writeAndFlush(out, promise: nil)
            handshakeTimer = eventLoop.assumeIsolated().scheduleTask(in: configuration.connectTimeout) {
                guard generation == self.generation, case .subscribing = self.state else { return }
                self.failed(reason: "no subscription confirmed within the connect timeout")
            }
        }
    }

    // MARK: - Events from the channel handler

    /// Returns false when the channel of `generation` is no longer current.
    func received(_ value: RESPValue, generation: UInt64) -> Bool {
        guard generation == self.generation else { return false }
        switch state {
        case .subscribing(let channel, let confirmed):
            if pendingHandshakeReplies > 0 {
                if case .error(let message) = value {
                    failed(reason: "the handshake failed: \(message)")
                    return false
                }
                pendingHandshakeReplies -= 1
                return true
            }
            guard let parts = value.array, parts.count == 3, parts[0].string?.lowercased() == "subscribe" else {
                failed(reason: "expected a subscription confirmation, got \(Self.describe(value))")
                return false
            }
            if confirmed + 1 == channels.count {
                state = .subscribed(channel)
                becameSubscribed(channel)
            } else {
                state = .subscribing(channel, confirmed: confirmed + 1)
            }
        case .subscribed:
            guard let parts = value.array, let kind = parts.first?.string?.lowercased() else {
                logger.warning("Redis sent the subscriber something other than a push; dropped", metadata: ["value": "\(Self.describe(value))"])
                return true
            }
            switch kind {
            case "message" where parts.count == 3:
                if let channel = parts[1].string, let payload = parts[2].bytes {
                    onMessage(channel, payload)
                } else {
                    logger.warning("a pub/sub message without a channel or payload; dropped")
                }
            case "pong":
                awaitingPong = false
            default:
                logger.debug("pub/sub push ignored", metadata: ["kind": "\(kind)"])
            }
        case .idle, .connecting, .waitingToReconnect, .closed:
            return false
        }
        return generation == self.generation
    }

    func channelFailed(reason: String, generation: UInt64) {
        guard generation == self.generation else { return }
        failed(reason: reason)
    }

    private func becameSubscribed(_ channel: any Channel) {
        handshakeTimer?.cancel()
        handshakeTimer = nil
        backoff.reset()
        if let began = outageStartedAt {
            outageStartedAt = nil
            logger.notice("Redis pub/sub subscribed again", metadata: ["outage_ms": "\((NIODeadline.now() - began).nanoseconds / 1_000_000)"])
        } else {
            logger.debug("Redis pub/sub subscribed")
        }
        awaitingPong = false
        let generation = self.generation
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        pingTask = eventLoop.scheduleRepeatedTask(initialDelay: keepAlive, delay: keepAlive) { _ in
            let subscriber = bound.value
            guard generation == subscriber.generation, case .subscribed(let channel) = subscriber.state else { return }
            if subscriber.awaitingPong {
                subscriber.failed(reason: "no answer to PING within \(subscriber.keepAlive.nanoseconds / 1_000_000) ms")
                return
            }
            subscriber.awaitingPong = true
            var encoder = RESPEncoder()
            var out = channel.allocator.buffer(capacity: 16)
            if (try? encoder.encode(["PING"], into: &out)) != nil { channel.writeAndFlush(out, promise: nil) }
        }
        onSubscribed()
    }

    private func stopTimers() {
        handshakeTimer?.cancel()
        handshakeTimer = nil
        pingTask?.cancel()
        pingTask = nil
    }

    private func failed(reason: String) {
        var channel: (any Channel)?
        var wasSubscribed = false
        switch state {
        case .subscribed(let c):
            channel = c
            wasSubscribed = true
        case .subscribing(let c, _): channel = c
        case .connecting: break
        case .idle, .waitingToReconnect, .closed: return
        }
        generation &+= 1
        let generation = self.generation
        stopTimers()
        let delay = backoff.nextDelay()
        state = .waitingToReconnect(eventLoop.assumeIsolated().scheduleTask(in: delay) {
            guard generation == self.generation, case .waitingToReconnect = self.state else { return }
            self.connect()
        })
        channel?.close(promise: nil)
        if wasSubscribed { onLost() }
        if outageStartedAt == nil {
            outageStartedAt = .now()
            logger.warning("Redis pub/sub unavailable; fleet events are missed until it returns", metadata: ["reason": "\(reason)"])
        } else {
            logger.debug("Redis pub/sub reconnect attempt failed", metadata: ["reason": "\(reason)"])
        }
    }

    private static func describe(_ value: RESPValue) -> String {
        String("\(value)".prefix(200))
    }
}

@available(*, unavailable)
extension RedisSubscriber: Sendable {}

/// Parses pushes off the subscriber's channel and hands them to it.
final class SubscriberChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let subscriber: RedisSubscriber
    private let generation: UInt64
    private let reader = RESPReader()
    private var failed = false

    init(subscriber: RedisSubscriber, generation: UInt64) {
        self.subscriber = subscriber
        self.generation = generation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        do {
            try reader.feed(unwrapInboundIn(data))
            while let value = try reader.next() {
                guard subscriber.received(value, generation: generation) else {
                    failed = true
                    return
                }
            }
        } catch {
            failed = true
            subscriber.channelFailed(reason: (error as? RedisError).map { $0.message } ?? "\(error)", generation: generation)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        subscriber.channelFailed(reason: "connection closed by Redis", generation: generation)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        subscriber.channelFailed(reason: (error as? IOError)?.description ?? "\(error)", generation: generation)
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension SubscriberChannelHandler: Sendable {}
