import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Serves one connection of a simulated instance, behind `configureHTTPServerPipeline` (which hands it
/// one request at a time, keeping pipelined ones until the answer is complete).
///
/// Everything here runs on the connection's event loop: delays are `scheduleTask` calls on it, never a
/// sleeping thread or a `Task`. State shared with the instance's other connections (counters,
/// generation slots, configuration) lives in `SimulatorCore`.
final class SimulatorHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Request bodies above this size are answered with 413.
    static let maxBodyBytes = 16 * 1024 * 1024

    private enum ReadState {
        case idle
        case receiving(HTTPRequestHead, ByteBuffer?)
        /// The rest of an oversized body, after its 413 went out.
        case discarding
    }

    /// What a generation needs once admitted, fixed when its request arrives.
    private struct Job {
        var request: GenerationRequest
        var id: String
        var created: Int
        var modelJSON: String
        var timeToFirstToken: TimeAmount
        var tokensPerSecond: Double

        /// Time from the first token to token `index` (0-based).
        func offset(ofToken index: Int) -> TimeAmount {
            guard self.tokensPerSecond > 0 else { return .zero }
            return .nanoseconds(Int64(Double(index) * 1e9 / self.tokensPerSecond))
        }
    }

    /// The request being answered (generating, queued or hanging). A class so that a scheduled callback
    /// can tell by identity whether its request is still the current one.
    private final class Exchange {
        enum Slot {
            case none
            case queued(ticket: UInt64)
            case held
        }

        let version: HTTPVersion
        let keepAlive: Bool
        let job: Job?
        var slot = Slot.none
        var scheduled: Scheduled<Void>?
        var stream: StreamRenderer?
        var nextToken = 0
        var firstTokenAt = NIODeadline.now()

        init(head: HTTPRequestHead, job: Job? = nil) {
            self.version = head.version
            self.keepAlive = head.isKeepAlive
            self.job = job
        }
    }

    private let core: SimulatorCore
    private var readState = ReadState.idle
    private var exchange: Exchange?
    /// Whether the current request is counted in `stats.inFlight`.
    private var countedInFlight = false

    init(core: SimulatorCore) {
        self.core = core
    }

    // MARK: Reading requests

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.core.stats.withLockedValue {
                $0.requests += 1
                $0.inFlight += 1
            }
            self.countedInFlight = true
            if let length = head.headers.first(name: "content-length").flatMap({ Int($0) }), length > Self.maxBodyBytes {
                self.readState = .discarding
                self.rejectTooLarge(head: head, context: context)
                return
            }
            if head.headers.first(name: "expect")?.lowercased() == "100-continue" {
                context.writeAndFlush(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            }
            self.readState = .receiving(head, nil)

        case .body(var chunk):
            guard case .receiving(let head, var body) = self.readState else { return }
            self.readState = .idle  // drops the enum's reference, so `body` grows in place
            guard (body?.readableBytes ?? 0) + chunk.readableBytes <= Self.maxBodyBytes else {
                self.readState = .discarding
                self.rejectTooLarge(head: head, context: context)
                return
            }
            if body == nil {
                body = chunk
            } else {
                body!.writeBuffer(&chunk)
            }
            self.readState = .receiving(head, body)

        case .end:
            switch self.readState {
            case .receiving(let head, let body):
                self.readState = .idle
                self.handle(head: head, body: body, context: context)
            case .discarding, .idle:
                self.readState = .idle
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let exchange = self.exchange {
            self.exchange = nil
            exchange.scheduled?.cancel()
            self.releaseSlot(of: exchange)
        }
        if self.countedInFlight {
            self.countedInFlight = false
            self.core.stats.withLockedValue { $0.inFlight -= 1 }
        }
        self.readState = .idle
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Routing

    private func handle(head: HTTPRequestHead, body: ByteBuffer?, context: ChannelHandlerContext) {
        let settings = self.core.currentSettings
        if settings.configuration.hang {
            // A wedged process: the request is read, never answered.
            self.exchange = Exchange(head: head)
            return
        }
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        switch path {
        case "/healthz", "/health":
            guard head.method == .GET else { return self.methodNotAllowed(head: head, allow: "GET", context: context) }
            let body = #"{"status":"ok","model":""# + settings.modelJSON + #"","gpu":""#
                + ResponseRenderer.jsonEscaped(self.core.gpu) + #""}"#
            self.respond(head: head, status: .ok, json: body, context: context)

        case "/metrics":
            // vLLM's load metrics under their own names, so that the gateway's `health.metrics_path`
            // reads a simulated instance as it reads a real one.
            guard head.method == .GET else { return self.methodNotAllowed(head: head, allow: "GET", context: context) }
            self.respondText(head: head, text: Self.metricsText(core: self.core, model: settings.modelJSON), context: context)

        case "/v1/models":
            guard head.method == .GET else { return self.methodNotAllowed(head: head, allow: "GET", context: context) }
            let body = #"{"object":"list","data":[{"id":""# + settings.modelJSON + #"","object":"model","created":"#
                + String(self.core.created) + #","owned_by":"tollgate-sim"}]}"#
            self.respond(head: head, status: .ok, json: body, context: context)

        case "/v1/chat/completions":
            guard head.method == .POST else { return self.methodNotAllowed(head: head, allow: "POST", context: context) }
            self.generate(.chat, head: head, body: body, settings: settings, context: context)

        case "/v1/completions":
            guard head.method == .POST else { return self.methodNotAllowed(head: head, allow: "POST", context: context) }
            self.generate(.text, head: head, body: body, settings: settings, context: context)

        case "/v1/embeddings":
            guard head.method == .POST else { return self.methodNotAllowed(head: head, allow: "POST", context: context) }
            self.embed(head: head, body: body, settings: settings, context: context)

        default:
            let message = "Invalid URL (\(head.method.rawValue) \(path))"
            self.respond(
                head: head,
                status: .notFound,
                json: ResponseRenderer.error(message: message, type: "invalid_request_error"),
                context: context
            )
        }
    }

    private func methodNotAllowed(head: HTTPRequestHead, allow: String, context: ChannelHandlerContext) {
        self.respond(
            head: head,
            status: .methodNotAllowed,
            json: ResponseRenderer.error(message: "Method Not Allowed", type: "invalid_request_error"),
            extraHeaders: [("allow", allow)],
            context: context
        )
    }

    private func rejectTooLarge(head: HTTPRequestHead, context: ChannelHandlerContext) {
        var head = head
        head.headers.replaceOrAdd(name: "connection", value: "close")  // the rest of the body is not read
        self.respond(
            head: head,
            status: .payloadTooLarge,
            json: ResponseRenderer.error(message: "Request body exceeds 16 MiB", type: "invalid_request_error"),
            context: context
        )
    }

    private func embed(head: HTTPRequestHead, body: ByteBuffer?, settings: SimulatorCore.Settings, context: ChannelHandlerContext) {
        let request: EmbeddingRequest
        do throws(InvalidRequest) {
            request = try EmbeddingRequest.parse(body: body)
        } catch {
            return self.rejectInvalid(error, head: head, context: context)
        }
        let json = ResponseRenderer.embeddings(model: settings.modelJSON, inputs: request.inputs, promptTokens: request.promptTokens)
        self.respond(head: head, status: .ok, json: json, context: context) {
            $0.embeddings += 1
            $0.promptTokens += request.promptTokens
        }
    }

    private func rejectInvalid(_ error: InvalidRequest, head: HTTPRequestHead, context: ChannelHandlerContext) {
        self.respond(
            head: head,
            status: .badRequest,
            json: ResponseRenderer.error(message: error.message, type: "invalid_request_error", param: error.param),
            context: context
        )
    }

    // MARK: Generations

    private func generate(
        _ kind: GenerationKind,
        head: HTTPRequestHead,
        body: ByteBuffer?,
        settings: SimulatorCore.Settings,
        context: ChannelHandlerContext
    ) {
        let configuration = settings.configuration
        let request: GenerationRequest
        do throws(InvalidRequest) {
            switch kind {
            case .chat:
                request = try .chat(body: body, defaultCompletionTokens: configuration.defaultCompletionTokens)
            case .text:
                request = try .completion(body: body, defaultCompletionTokens: configuration.defaultCompletionTokens)
            }
        } catch {
            return self.rejectInvalid(error, head: head, context: context)
        }

        if configuration.errorRate > 0, Double.random(in: 0..<1) < configuration.errorRate {
            self.respond(
                head: head,
                status: HTTPResponseStatus(statusCode: configuration.errorStatus),
                json: ResponseRenderer.error(message: "simulated failure", type: "server_error"),
                context: context
            ) { $0.errors += 1 }
            return
        }

        let job = Job(
            request: request,
            id: self.core.makeID(prefix: kind == .chat ? "chatcmpl-" : "cmpl-"),
            created: Int(Date().timeIntervalSince1970),
            modelJSON: settings.modelJSON,
            timeToFirstToken: max(.zero, configuration.timeToFirstToken),
            tokensPerSecond: configuration.tokensPerSecond.isFinite ? configuration.tokensPerSecond : 0
        )
        let exchange = Exchange(head: head, job: job)
        self.exchange = exchange
        switch self.core.scheduler.acquire(on: context.eventLoop) {
        case .granted:
            exchange.slot = .held
            self.begin(exchange, context: context)
        case .queued(let ticket, let admitted):
            exchange.slot = .queued(ticket: ticket)
            admitted.assumeIsolated().whenSuccess { [self] in
                guard self.exchange === exchange, case .queued = exchange.slot else { return }
                exchange.slot = .held
                self.begin(exchange, context: context)
            }
        }
    }

    /// The generation has a slot: its first token comes after `timeToFirstToken`.
    private func begin(_ exchange: Exchange, context: ChannelHandlerContext) {
        guard let job = exchange.job else { return }
        let firstTokenAt = NIODeadline.now() + job.timeToFirstToken
        exchange.firstTokenAt = firstTokenAt
        if job.request.stream {
            self.run(exchange, at: firstTokenAt, delayed: job.timeToFirstToken > .zero, context: context) {
                $0.startStream(exchange, context: context)
            }
        } else {
            let duration = job.offset(ofToken: job.request.completionTokens)
            self.run(
                exchange,
                at: firstTokenAt + duration,
                delayed: job.timeToFirstToken > .zero || duration > .zero,
                context: context
            ) {
                $0.answerCompletion(exchange, context: context)
            }
        }
    }

    /// Runs `work` now, or at `deadline` on this event loop if `delayed`, unless the exchange has ended by then.
    private func run(
        _ exchange: Exchange,
        at deadline: NIODeadline,
        delayed: Bool,
        context: ChannelHandlerContext,
        _ work: @escaping (SimulatorHTTPHandler) -> Void
    ) {
        guard delayed else { return work(self) }
        exchange.scheduled = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            guard self.exchange === exchange else { return }
            exchange.scheduled = nil
            work(self)
        }
    }

    private func answerCompletion(_ exchange: Exchange, context: ChannelHandlerContext) {
        guard let job = exchange.job else { return }
        let request = job.request
        let json = ResponseRenderer.completion(
            kind: request.kind,
            id: job.id,
            created: job.created,
            model: job.modelJSON,
            text: TokenText.completion(count: request.completionTokens, seed: request.textSeed),
            finishReason: request.finishReason,
            promptTokens: request.promptTokens,
            completionTokens: request.completionTokens
        )
        self.respond(version: exchange.version, keepAlive: exchange.keepAlive, status: .ok, json: json, context: context) {
            $0.generations += 1
            $0.promptTokens += request.promptTokens
            $0.completionTokens += request.completionTokens
        }
    }

    private func startStream(_ exchange: Exchange, context: ChannelHandlerContext) {
        guard let job = exchange.job else { return }
        let request = job.request
        self.core.stats.withLockedValue {
            $0.generations += 1
            $0.streams += 1
            $0.promptTokens += request.promptTokens
        }
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/event-stream")
        headers.add(name: "cache-control", value: "no-cache")
        Self.addConnectionHeader(to: &headers, version: exchange.version, keepAlive: exchange.keepAlive)
        // No content-length: the encoder uses chunked transfer encoding.
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: exchange.version, status: .ok, headers: headers))), promise: nil)

        let renderer = StreamRenderer(
            kind: request.kind,
            id: job.id,
            created: job.created,
            model: job.modelJSON,
            includeUsage: request.includeUsage
        )
        exchange.stream = renderer
        var event = context.channel.allocator.buffer(capacity: 256)
        if renderer.roleEvent(into: &event) {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(event))), promise: nil)
        }
        self.streamTokens(exchange, context: context)
    }

    /// Sends the next token (all remaining tokens when there is no delay between them), then schedules
    /// the following one or ends the stream.
    private func streamTokens(_ exchange: Exchange, context: ChannelHandlerContext) {
        guard let job = exchange.job, let renderer = exchange.stream else { return }
        let count = job.request.completionTokens
        if job.tokensPerSecond <= 0 {
            // Each event is still its own body part; one flush for all of them keeps zero latency cheap.
            while exchange.nextToken < count {
                self.writeToken(exchange.nextToken, exchange: exchange, renderer: renderer, context: context)
                exchange.nextToken += 1
            }
            return self.finishStream(exchange, context: context)
        }
        self.writeToken(exchange.nextToken, exchange: exchange, renderer: renderer, context: context)
        exchange.nextToken += 1
        guard exchange.nextToken < count else {
            return self.finishStream(exchange, context: context)
        }
        context.flush()
        guard self.exchange === exchange else { return }  // the flush failed and closed the connection
        let deadline = exchange.firstTokenAt + job.offset(ofToken: exchange.nextToken)
        self.run(exchange, at: deadline, delayed: true, context: context) {
            $0.streamTokens(exchange, context: context)
        }
    }

    private func writeToken(_ index: Int, exchange: Exchange, renderer: StreamRenderer, context: ChannelHandlerContext) {
        guard let job = exchange.job else { return }
        var event = context.channel.allocator.buffer(capacity: 256)
        renderer.tokenEvent(TokenText.token(index, seed: job.request.textSeed), into: &event)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(event))), promise: nil)
    }

    private func finishStream(_ exchange: Exchange, context: ChannelHandlerContext) {
        guard let job = exchange.job, let renderer = exchange.stream else { return }
        let request = job.request
        var event = context.channel.allocator.buffer(capacity: 256)
        renderer.finishEvent(request.finishReason, into: &event)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(event))), promise: nil)
        if request.includeUsage {
            var usage = context.channel.allocator.buffer(capacity: 256)
            renderer.usageEvent(prompt: request.promptTokens, completion: request.completionTokens, into: &usage)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(usage))), promise: nil)
        }
        context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: StreamRenderer.done)))), promise: nil)
        self.settle { $0.completionTokens += request.completionTokens }
        self.writeEnd(keepAlive: exchange.keepAlive, context: context)
    }

    // MARK: Writing answers

    /// `/metrics` in Prometheus text format: requests waiting for a generation slot, generations
    /// running, and the share of slots in use standing in for the KV cache's usage.
    static func metricsText(core: SimulatorCore, model: String) -> String {
        let waiting = core.scheduler.queued, running = core.scheduler.active
        let capacity = core.currentSettings.configuration.capacity
        let usage = capacity > 0 ? min(1, Double(running) / Double(capacity)) : 0
        let labels = "{model_name=\"\(model)\"}"
        return """
            # HELP vllm:num_requests_waiting Number of requests waiting to be processed.
            # TYPE vllm:num_requests_waiting gauge
            vllm:num_requests_waiting\(labels) \(Double(waiting))
            # HELP vllm:num_requests_running Number of requests in model execution batches.
            # TYPE vllm:num_requests_running gauge
            vllm:num_requests_running\(labels) \(Double(running))
            # HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
            # TYPE vllm:kv_cache_usage_perc gauge
            vllm:kv_cache_usage_perc\(labels) \(usage)

            """
    }

    private func respondText(head: HTTPRequestHead, text: String, context: ChannelHandlerContext) {
        self.settle { _ in }
        let body = context.channel.allocator.buffer(string: text)
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain; version=0.0.4")
        headers.add(name: "content-length", value: String(body.readableBytes))
        Self.addConnectionHeader(to: &headers, version: head.version, keepAlive: head.isKeepAlive)
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        self.writeEnd(keepAlive: head.isKeepAlive, context: context)
    }

    private func respond(
        head: HTTPRequestHead,
        status: HTTPResponseStatus,
        json: String,
        extraHeaders: [(String, String)] = [],
        context: ChannelHandlerContext,
        stats: (inout SimulatorStats) -> Void = { _ in }
    ) {
        self.respond(
            version: head.version,
            keepAlive: head.isKeepAlive,
            status: status,
            json: json,
            extraHeaders: extraHeaders,
            context: context,
            stats: stats
        )
    }

    /// Sends a complete JSON answer, after settling the request's bookkeeping (`stats` applied under the
    /// same lock as the `inFlight` decrement).
    private func respond(
        version: HTTPVersion,
        keepAlive: Bool,
        status: HTTPResponseStatus,
        json: String,
        extraHeaders: [(String, String)] = [],
        context: ChannelHandlerContext,
        stats: (inout SimulatorStats) -> Void = { _ in }
    ) {
        self.settle(stats)
        let body = context.channel.allocator.buffer(string: json)
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/json")
        headers.add(name: "content-length", value: String(body.readableBytes))
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
        Self.addConnectionHeader(to: &headers, version: version, keepAlive: keepAlive)
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        self.writeEnd(keepAlive: keepAlive, context: context)
    }

    /// Ends the current request's bookkeeping: its slot is released, it leaves `inFlight`. Done before the
    /// answer's end is written, since that may hand this handler the next pipelined request at once.
    private func settle(_ stats: (inout SimulatorStats) -> Void) {
        if let exchange = self.exchange {
            self.exchange = nil
            exchange.scheduled?.cancel()
            self.releaseSlot(of: exchange)
        }
        let counted = self.countedInFlight
        self.countedInFlight = false
        self.core.stats.withLockedValue {
            stats(&$0)
            if counted { $0.inFlight -= 1 }
        }
    }

    private func writeEnd(keepAlive: Bool, context: ChannelHandlerContext) {
        if keepAlive {
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let channel = context.channel
            context.writeAndFlush(self.wrapOutboundOut(.end(nil))).whenComplete { _ in
                channel.close(promise: nil)
            }
        }
    }

    private func releaseSlot(of exchange: Exchange) {
        switch exchange.slot {
        case .none:
            break
        case .queued(let ticket):
            // Not in the queue any more means the slot was granted while we were leaving: give it back.
            if !self.core.scheduler.cancel(ticket: ticket) { self.core.scheduler.release() }
        case .held:
            self.core.scheduler.release()
        }
        exchange.slot = .none
    }

    private static func addConnectionHeader(to headers: inout HTTPHeaders, version: HTTPVersion, keepAlive: Bool) {
        if !keepAlive {
            headers.add(name: "connection", value: "close")
        } else if version.major == 1, version.minor == 0 {
            headers.add(name: "connection", value: "keep-alive")
        }
    }
}
