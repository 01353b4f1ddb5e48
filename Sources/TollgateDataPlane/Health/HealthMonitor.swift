import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore

/// Owns every instance's `InstanceHealth` on one event loop, runs the active probes and
/// receives passive failure reports from the data-plane loops; when an instance's availability
/// changes it tells the `SnapshotPublisher` (on the same loop).
///
/// A report is a hop to the monitor's loop; it happens per failure, never per request.
public final class HealthMonitor: Sendable {
    public let eventLoop: any EventLoop
    let publisher: SnapshotPublisher
    var store: StateStore { publisher.store }
    let clock: MonotonicClock
    let logger: Logger
    private let state: NIOLoopBoundBox<MonitorState>

    final class MonitorState {
        var health: [String: InstanceHealth] = [:]
        var probeTask: RepeatedTask?
        var probing: Set<String> = []
        var stopped = false
    }

    /// Installs `table` (its instances up until probes or failures say otherwise) on
    /// `publisher`'s loop.
    init(table: RoutingTable, publisher: SnapshotPublisher, clock: @escaping MonotonicClock = { NIODeadline.now().uptimeNanoseconds }, logger: Logger) {
        self.eventLoop = publisher.eventLoop
        self.publisher = publisher
        self.clock = clock
        self.logger = logger
        self.state = NIOLoopBoundBox.makeBoxSendingValue(MonitorState(), eventLoop: eventLoop)
        eventLoop.execute { self.install(table) }
    }

    /// Starts periodic probing (when the configuration has a probe path).
    public func startProbing() {
        eventLoop.execute {
            self.reschedule()
        }
    }

    public func stop() {
        eventLoop.execute {
            let s = self.state.value
            s.stopped = true
            s.probeTask?.cancel()
            s.probeTask = nil
        }
    }

    /// Swaps in a new routing table (hot reload). Instances with the same name and URL keep
    /// their health; the probe schedule follows the new settings.
    public func install(_ table: RoutingTable) {
        eventLoop.execute {
            let s = self.state.value
            let settings = InstanceHealth.Settings(table.configuration.health)
            var health: [String: InstanceHealth] = [:]
            for inst in table.instances {
                var h = s.health[inst.identity] ?? InstanceHealth(settings: settings)
                h.settings = settings
                health[inst.identity] = h
            }
            let reschedule = self.store.load().table.configuration.health != table.configuration.health || s.probeTask == nil
            s.health = health
            self.publisher.install(table, availability: self.availability())
            if reschedule && s.probeTask != nil { self.reschedule() }
        }
    }

    /// A data-plane loop saw a request to `instance` fail.
    public func reportFailure(identity: String, name: String, reason: String) {
        eventLoop.execute {
            let s = self.state.value
            guard var h = s.health[identity] else { return }
            let action = h.recordFailure(at: self.clock())
            s.health[identity] = h
            if case .ejected(let until) = action {
                let seconds = Double(until - self.clock()) / 1e9
                self.logger.warning("instance ejected", metadata: [
                    "instance": "\(name)", "reason": "\(reason)", "for_s": "\(Int(seconds.rounded()))", "ejections": "\(h.ejections)",
                ])
                self.publisher.availabilityChanged(self.availability())
            }
        }
    }

    /// The health of every instance, for the control plane.
    public func snapshot() -> EventLoopFuture<[String: InstanceHealth]> {
        eventLoop.submit { self.state.value.health }
    }

    /// Each instance's availability, by identity, for the next snapshot.
    private func availability() -> [String: Availability] {
        state.value.health.mapValues { Availability(probeUp: $0.probeUp, ejectedUntil: $0.ejectedUntil ?? 0) }
    }

    private func reschedule() {
        let s = state.value
        s.probeTask?.cancel()
        s.probeTask = nil
        guard !s.stopped else { return }
        let settings = store.load().table.configuration.health
        guard !settings.probePath.isEmpty else { return }
        let interval = TimeAmount.nanoseconds(settings.probeInterval.nanoseconds)
        s.probeTask = eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: interval) { _ in
            self.probeAll()
        }
    }

    private func probeAll() {
        let table = store.load().table
        let settings = table.configuration.health
        let s = state.value
        for inst in table.instances where !s.probing.contains(inst.identity) {
            s.probing.insert(inst.identity)
            let identity = inst.identity
            let name = inst.name
            Probe.run(url: inst.url, path: inst.url.basePath + settings.probePath, apiKey: inst.apiKey,
                      timeout: .nanoseconds(settings.probeTimeout.nanoseconds), on: eventLoop)
                .assumeIsolated().whenComplete { result in
                    let s = self.state.value
                    s.probing.remove(identity)
                    guard var h = s.health[identity] else { return }
                    let ok = (try? result.get()) ?? false
                    let action = h.recordProbe(success: ok, at: self.clock())
                    s.health[identity] = h
                    switch action {
                    case .markedDown:
                        self.logger.warning("instance marked down by probes", metadata: ["instance": "\(name)"])
                        self.publisher.availabilityChanged(self.availability())
                    case .markedUp:
                        self.logger.notice("instance marked up by probes", metadata: ["instance": "\(name)"])
                        self.publisher.availabilityChanged(self.availability())
                    case .none, .ejected:
                        break
                    }
                }
        }
    }
}

/// One active health probe: a fresh connection, `GET path`, success on a 2xx head.
enum Probe {
    static func run(url: UpstreamURL, path: String, apiKey: String?, timeout: TimeAmount, on eventLoop: any EventLoop) -> EventLoopFuture<Bool> {
        let promise = eventLoop.makePromise(of: Bool.self)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ProbeHandler(promise: promise))
                }
            }
        bootstrap.connect(host: url.host, port: url.port).assumeIsolated().whenComplete { result in
            switch result {
            case .failure:
                promise.succeed(false)
            case .success(let channel):
                var headers = HTTPHeaders([("Host", url.hostHeader), ("User-Agent", "tollgate-probe"), ("Connection", "close")])
                if let apiKey { headers.add(name: "Authorization", value: "Bearer \(apiKey)") }
                let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path.isEmpty ? "/" : path, headers: headers)
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                let timer = eventLoop.scheduleTask(in: timeout) { promise.succeed(false) }
                promise.futureResult.whenComplete { _ in
                    timer.cancel()
                    channel.close(promise: nil)
                }
            }
        }
        return promise.futureResult
    }
}

private final class ProbeHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<Bool>
    init(promise: EventLoopPromise<Bool>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            promise.succeed((200..<300).contains(Int(head.status.code)))
        }
    }
    func channelInactive(context: ChannelHandlerContext) { promise.succeed(false) }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.succeed(false)
        context.close(promise: nil)
    }
}
