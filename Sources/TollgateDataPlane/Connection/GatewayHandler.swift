import Atomics
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateRedis

/// The data plane's handler for one client connection. It reads a request (head, then body),
/// decides what it is — a local answer, an error, or a request to forward — and hands
/// forwarding to an `Exchange`. One request at a time: later pipelined requests are queued
/// until the response is complete.
final class GatewayHandler: ChannelDuplexHandler, ClientSide {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Where the connection is in its current request.
    private enum State {
        /// Waiting for a request head.
        case idle
        /// Collecting the body of a request that will be forwarded.
        case receiving(GatewayRequest)
        /// Reading and dropping the body of a request already answered with `answer`.
        case discarding(answer: LocalAnswer, close: Bool, head: HTTPRequestHead, requestID: String)
        /// An exchange is forwarding the request and streaming the answer.
        case forwarding(Exchange)
        /// `GET /v1/usage`: the department's own report, read off the event loop once the request is complete.
        case usageReport(head: HTTPRequestHead, requestID: String, department: String)
        /// Answering here: a local answer being written or computed off the loop, a Redis
        /// lookup under way, a cached answer.
        case responding
        /// Waiting for an identical request already at an instance (single flight).
        case following(Follower)
        case closed
    }

    /// Pipelined request parts waiting for the current answer to end (NIO's pipelining handler
    /// did this before; it also stopped reading during every answer, which cost two `epoll_ctl`
    /// calls per request).
    private struct Pipeline {
        var parts = CircularBuffer<HTTPServerRequestPart>()
        /// A `read` was asked for and not passed on: it is passed on when the queue empties and
        /// the client reads again.
        var readHeld = false
        /// The queue is being handed on (a request answered synchronously meanwhile must not
        /// start a second pass).
        var draining = false
    }

    let loop: LoopContext
    let guardHandler: ConnectionGuard
    let remoteAddress: String
    private var state = State.idle
    private(set) var context: ChannelHandlerContext?
    private var pipeline = Pipeline()
    /// Frames every answer on this connection, and knows what the request being answered asks
    /// of it: its method (a `HEAD` gets no body, whichever path answers), HTTP/1.0, keep-alive.
    private var writer = ResponseWriter()
    /// Per-connection timers, re-armed by each request without rescheduling (see `DeadlineTimer`).
    private var bodyTimer: DeadlineTimer?
    /// The deadlines of the exchange in progress (per connection, re-armed by each request).
    private var exchangeTimers: ExchangeTimers?

    init(loop: LoopContext, guardHandler: ConnectionGuard, remoteAddress: String) {
        self.loop = loop
        self.guardHandler = guardHandler
        self.remoteAddress = remoteAddress
    }

    var isIdle: Bool { if case .idle = state { true } else { false } }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        bodyTimer = DeadlineTimer(eventLoop: context.eventLoop) { [weak self] in self?.bodyTimedOut() }
        exchangeTimers = ExchangeTimers(eventLoop: context.eventLoop)
        loop.connections[ObjectIdentifier(self)] = self
        loop.counters.activeConnections.wrappingIncrement(ordering: .relaxed)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        connectionGone()
        bodyTimer?.cancel()
        exchangeTimers?.cancel()
        self.context = nil
    }

    private func connectionGone() {
        if loop.connections.removeValue(forKey: ObjectIdentifier(self)) != nil {
            loop.counters.activeConnections.wrappingDecrement(ordering: .relaxed)
        }
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        // A pipelined request — its head arrives while the previous answer is still going out —
        // waits its turn, and so does everything after it. So does a request that arrives while
        // the client is not reading its answers: answering it would only grow the outbound buffer.
        if !pipeline.parts.isEmpty || (isHead(part) && (!isIdle || !context.channel.isWritable)) {
            pipeline.parts.append(part)
            return
        }
        handle(part, context: context)
    }

    /// Reads go on while an answer is written (so a client that leaves is noticed at once); they
    /// are held while a pipelined request waits, which bounds what is queued to one read, and
    /// while the client is not reading (the channel is not writable), which bounds what is
    /// written to it to one read's answers past the high-water mark.
    func read(context: ChannelHandlerContext) {
        if pipeline.parts.isEmpty && context.channel.isWritable {
            context.read()
        } else {
            pipeline.readHeld = true
        }
    }

    private func isHead(_ part: HTTPServerRequestPart) -> Bool {
        if case .head = part { true } else { false }
    }

    /// Hands queued pipelined parts on, in order, once the connection is idle again.
    private func drainPipelined(_ context: ChannelHandlerContext) {
        guard !pipeline.draining else { return }  // a request answered while draining: the loop below goes on
        pipeline.draining = true
        defer { pipeline.draining = false }
        while let part = pipeline.parts.first {
            if isHead(part) && (!isIdle || !context.channel.isWritable) { return }
            pipeline.parts.removeFirst()
            handle(part, context: context)
        }
        if pipeline.readHeld && context.channel.isWritable {
            pipeline.readHeld = false
            context.read()
        }
    }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            receivedHead(head, context: context)
        case .body(var chunk):
            switch state {
            case .receiving(var pending):
                let limit = pending.state.table.configuration.limits.maxBodyBytes
                if pending.body.readableBytes + chunk.readableBytes > limit {
                    state = .responding
                    writer.request.keepAlive = false
                    recordLocal(pending, status: 413, model: nil)
                    respond(.error(.bodyTooLarge(limit: limit)), head: pending.head, requestID: pending.requestID)
                    return
                }
                state = .idle  // avoid a copy-on-write of the body while it is in `state`
                pending.body.writeBuffer(&chunk)
                state = .receiving(pending)
            default:
                break  // discarding, or a body after an early answer
            }
        case .end:
            bodyTimer?.set(nil)
            switch state {
            case .receiving(let pending):
                state = .responding
                dispatch(pending)
            case .discarding(let answer, let close, let head, let requestID):
                if close { writer.request.keepAlive = false }
                state = .responding
                respond(answer, head: head, requestID: requestID, log: answer.error != nil)
            case .usageReport(let head, let requestID, let department):
                state = .responding
                answerUsage(head: head, requestID: requestID, department: department, context: context)
            default:
                break
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        clientLeft()
        connectionGone()
        context.fireChannelInactive()
    }

    /// The client is gone (or its connection broke): a request under way ends as its client left.
    private func clientLeft() {
        let left = state
        state = .closed
        switch left {
        case .forwarding(let exchange): exchange.clientClosed()
        case .following(let follower): follower.abandon()
        default: break
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .forwarding(let exchange) = state {
            exchange.clientWritabilityChanged(context.channel.isWritable)
        }
        if context.channel.isWritable {
            if !pipeline.parts.isEmpty {
                if isIdle { drainPipelined(context) }
            } else if pipeline.readHeld {
                pipeline.readHeld = false
                context.read()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let parse = error as? HTTPParserError {
            switch state {
            case .idle, .discarding:
                if case .headerOverflow = parse {
                    guardHandler.rejectAndClose(.headersTooLarge("Request headers exceed the gateway's limits (\(limits.maxHeaderBytes) bytes, \(limits.maxHeaderCount) fields)."))
                } else {
                    guardHandler.rejectAndClose(.invalidRequest("Malformed HTTP request: \(parse)."))
                }
                state = .closed
                return
            default:
                break
            }
        }
        clientLeft()
        context.close(promise: nil)
    }

    private var limits: RequestLimits { loop.monitor.store.load().table.configuration.limits }

    // MARK: Request head

    private func receivedHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guardHandler.requestHeadReceived()
        loop.counters.requests.wrappingIncrement(ordering: .relaxed)
        // NIO's parser stops for good after a CONNECT or an Upgrade request (it expects the
        // connection to change protocols): answer it, then close.
        let switchesProtocol = head.method == .CONNECT || head.headers.contains(name: "upgrade")
        writer.request = ResponseWriter.Request(method: head.method, http10: head.version.major == 1 && head.version.minor == 0,
                                                keepAlive: head.isKeepAlive && !loop.draining && !switchesProtocol)
        let requestID = Self.acceptedRequestID(head.headers) ?? loop.nextRequestID()
        let state = loop.monitor.store.load()
        let table = state.table
        let path = head.uri.firstIndex(of: "?").map { head.uri[..<$0] } ?? head.uri[...]  // no copy
        // Whatever the request turns out to be, its body (if any) must arrive in time: the
        // timer runs until `.end`, in every state that reads or drops a body.
        bodyTimer?.set(.now() + .nanoseconds(table.configuration.limits.bodyTimeout.nanoseconds))
        if head.method == .CONNECT {
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            self.state = .responding
            return respond(.error(.methodNotAllowed(method: "CONNECT", path: String(path))), head: head, requestID: requestID)
        }

        let expectsContinue = head.headers.first(name: "expect")?.lowercased() == "100-continue"
        func early(_ answer: LocalAnswer, close: Bool = false) {
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            let declared = head.headers.first(name: "content-length").map { Int($0) ?? Int.max } ?? 0
            if expectsContinue || declared > table.configuration.limits.maxBodyBytes {
                // The client waits for our word before sending its body, or announced more than
                // the gateway would ever read: answer now and close rather than wait for a body
                // that will not come, or read one nobody wants.
                writer.request.keepAlive = false
                self.state = .responding
                respond(answer, head: head, requestID: requestID)
                return
            }
            self.state = .discarding(answer: answer, close: close, head: head, requestID: requestID)
        }

        let endpoint: APIEndpoint
        switch path {
        case "/v1/chat/completions": endpoint = .chatCompletions
        case "/v1/completions": endpoint = .completions
        case "/v1/embeddings": endpoint = .embeddings
        case "/healthz", "/health":
            guard head.method == .GET || head.method == .HEAD else { return early(.error(.methodNotAllowed(method: head.method.rawValue, path: String(path)))) }
            self.state = .discarding(answer: LocalAnswers.health(state, now: loop.clock()), close: false, head: head, requestID: requestID)
            return
        case "/v1/models":
            guard head.method == .GET else { return early(.error(.methodNotAllowed(method: head.method.rawValue, path: String(path)))) }
            if case .failure(let e) = Authenticator.authenticate(head.headers, state: state, nowMs: wallClockMs()) { return early(.error(e)) }
            self.state = .discarding(answer: LocalAnswers.models(table), close: false, head: head, requestID: requestID)
            return
        case "/v1/usage":
            guard head.method == .GET else { return early(.error(.methodNotAllowed(method: head.method.rawValue, path: String(path)))) }
            let caller: Caller
            switch Authenticator.authenticate(head.headers, state: state, nowMs: wallClockMs()) {
            case .failure(let e): return early(.error(e))
            case .success(let c): caller = c
            }
            self.state = .usageReport(head: head, requestID: requestID, department: table.departments[caller.department].name)
            return
        default:
            return early(.error(.notFound(method: head.method.rawValue, path: String(path))))
        }
        guard head.method == .POST else {
            return early(.error(.methodNotAllowed(method: head.method.rawValue, path: String(path))))
        }
        let caller: Caller
        switch Authenticator.authenticate(head.headers, state: state, nowMs: wallClockMs()) {
        case .failure(let e): return early(.error(e))
        case .success(let c): caller = c
        }
        let limit = table.configuration.limits.maxBodyBytes
        if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > limit {
            // Answer at once and close rather than read a body we will not take.
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            writer.request.keepAlive = false
            self.state = .responding
            recordLocal(GatewayRequest(state: state, head: head, requestID: requestID, caller: caller, endpoint: endpoint,
                                       body: ByteBuffer(), started: .now()), status: 413, model: nil)
            respond(.error(.bodyTooLarge(limit: limit)), head: head, requestID: requestID)
            return
        }
        if expectsContinue { guardHandler.writeContinue() }
        let expected = head.headers.first(name: "content-length").flatMap(Int.init) ?? 0
        let body = context.channel.allocator.buffer(capacity: min(max(expected, 256), limit))
        let now = NIODeadline.now()
        self.state = .receiving(GatewayRequest(
            state: state, head: head, requestID: requestID, caller: caller, endpoint: endpoint, body: body,
            started: now))
    }

    private func bodyTimedOut() {
        switch state {
        case .receiving(let pending):
            state = .responding
            writer.request.keepAlive = false
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            recordLocal(pending, status: 408, model: nil)
            respond(.error(.requestTimeout), head: pending.head, requestID: pending.requestID)
        case .discarding(_, _, let head, let requestID), .usageReport(let head, let requestID, _):
            // A body nobody will use, still not finished: answer 408 and close.
            state = .responding
            writer.request.keepAlive = false
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            respond(.error(.requestTimeout), head: head, requestID: requestID)
        default:
            break
        }
    }

    /// Ends a request that passed authentication but was answered here (or left by its client
    /// before an instance was asked): its row, and its reservation given back if it had one.
    private func recordLocal(_ pending: GatewayRequest, status: Int, model: String?, stream: Bool = false,
                             releasing reservation: QuotaBook.Reservation? = nil) {
        let now = NIODeadline.now()
        let latency = Double((now - pending.started).nanoseconds) / 1e6
        loop.end(UsageRecord(
            timeMs: wallClockMs() - Int64(latency), requestID: pending.requestID,
            department: pending.state.table.departments[pending.caller.department].name,
            keyPrefix: pending.caller.keyPrefix, model: model, endpoint: pending.endpoint.name, instance: nil, status: status,
            latencyMs: latency, cache: .off, stream: stream), settling: reservation, spent: 0, in: pending.state.quotas)
    }

    /// A client's `X-Request-Id` is kept when it is short and printable.
    static func acceptedRequestID(_ headers: HTTPHeaders) -> String? {
        guard let id = headers.first(name: "x-request-id"), !id.isEmpty, id.utf8.count <= 128,
              id.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
        return id
    }

    // MARK: Dispatch

    private func dispatch(_ pending: GatewayRequest) {
        let state = pending.state
        let table = state.table
        if loop.ledgerSaturated {
            // The ledger cannot keep up (a full or failing disk): refuse rather than serve a
            // request whose row would be lost. No row for the refusal either.
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            respond(.error(.ledgerSaturated), head: pending.head, requestID: pending.requestID)
            return
        }
        switch Admission.admit(pending, loop: loop) {
        case .admitted(let admitted):
            forward(admitted)
        case .refused(let refusal):
            if refusal.byQuota {
                loop.counters.quotaRejections.wrappingIncrement(ordering: .relaxed)
            } else {
                loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            }
            recordLocal(pending, status: refusal.status, model: refusal.model, stream: refusal.stream)
            respond(refusal.answer, head: pending.head, requestID: pending.requestID)
        }
    }

    /// Step 5: the cache, when the department's policy allows it (a hit answers here, a miss
    /// leads or follows a single flight), then step 6–7: an exchange with an instance.
    private func forward(_ admitted: AdmittedRequest) {
        switch CacheLookup.start(admitted, loop: loop) {
        case .off:
            startExchange(admitted, cache: nil)
        case .bypass(let plan):
            startExchange(admitted, cache: plan)
        case .hit(let answer, let lookup):
            if !answerFromCache(answer, admitted, preview: lookup.keys.preview) { lookUpInRedis(admitted, lookup) }
        case .lookup(let lookup):
            lookUpInRedis(admitted, lookup)
        }
    }

    /// A Redis lookup; on a miss, lead a single flight or follow the one already going.
    private func lookUpInRedis(_ admitted: AdmittedRequest, _ lookup: CacheLookup) {
        let pending = admitted.request, summary = admitted.summary, model = admitted.model, reservation = admitted.reservation
        let keys = lookup.keys, preview = keys.preview, store = lookup.decision.store
        lookup.redis.get(keys.redisKey).assumeIsolated().whenComplete { [weak self] result in
            guard let self else { return }
            guard case .responding = self.state, self.context != nil else {
                // The client left while Redis answered: its reservation back, and its row.
                self.recordLocal(pending, status: 499, model: model, stream: summary.stream, releasing: reservation)
                return
            }
            switch result {
            case .success(let stored?):
                if let answer = try? CachedAnswer.decode(stored) {
                    // Asked again: keep the answer in this loop's memory, and the body's key.
                    self.loop.localCache.put(keys.redisKey, answer: answer, ttlMs: lookup.policy.ttl.milliseconds, nowMs: wallClockMs())
                    if let remember = keys.remember { self.loop.keyMemo.store(remember.entry(pending.body), slot: remember.slot) }
                    if self.answerFromCache(answer, admitted, preview: preview) {
                        return
                    }
                }
                fallthrough
            case .success(nil):
                let bound = NIOLoopBound(self, eventLoop: self.loop.eventLoop)
                let requestID = pending.requestID
                let eventLoop = self.loop.eventLoop
                let leads = self.loop.singleFlight.join(keys.key) { answer in
                    eventLoop.execute { bound.value.followerResumed(requestID: requestID, answer: answer) }
                }
                if leads {
                    self.loop.counters.cacheMisses.wrappingIncrement(ordering: .relaxed)
                    self.startExchange(admitted, cache: lookup.plan(.miss, store: store, leader: true))
                } else {
                    let follower = Follower(requestID: requestID, abandon: { [weak self] in
                        // The client left while it waited: nothing was used, and the request has its row.
                        self?.recordLocal(pending, status: 499, model: model, stream: summary.stream, releasing: reservation)
                    }) { [weak self] answer in
                        guard let self else { return }
                        if let answer, self.answerFromCache(answer, admitted, preview: preview) {
                            return
                        }
                        self.loop.counters.cacheMisses.wrappingIncrement(ordering: .relaxed)
                        self.startExchange(admitted, cache: lookup.plan(.miss, store: store, leader: false))
                    }
                    self.state = .following(follower)
                }
            case .failure:
                self.loop.counters.cacheBypasses.wrappingIncrement(ordering: .relaxed)
                self.startExchange(admitted, cache: lookup.plan(.bypass, store: false, leader: false))
            }
        }
    }

    /// A request waiting for an identical one to come back from an instance.
    struct Follower {
        let requestID: String
        /// The client closed before the flight ended.
        let abandon: () -> Void
        let resume: (CachedAnswer?) -> Void
    }

    fileprivate func followerResumed(requestID: String, answer: CachedAnswer?) {
        guard case .following(let f) = state, f.requestID == requestID, context != nil else { return }
        state = .responding
        f.resume(answer)
    }

    /// Answers from a stored answer: as JSON, or replayed as an SSE stream. `false` when it
    /// cannot be replayed in the form asked for (then the request goes upstream).
    private func answerFromCache(_ answer: CachedAnswer, _ admitted: AdmittedRequest, preview: String?) -> Bool {
        let pending = admitted.request, state = pending.state, summary = admitted.summary, model = admitted.model
        guard let context, case .responding = self.state else { return false }
        var events: [[UInt8]] = []
        if summary.stream {
            guard let replay = try? StreamReplayer.events(from: answer.body, includeUsage: summary.includeUsage) else { return false }
            events = replay
        }
        loop.counters.cacheHits.wrappingIncrement(ordering: .relaxed)
        let nowMs = wallClockMs()
        var headers: [(String, String)] = []
        headers.reserveCapacity(12)
        headers.append(("content-type", summary.stream ? "text/event-stream" : answer.contentType))
        if summary.stream { headers.append(("cache-control", "no-cache")) }
        headers.append(("x-cache", "HIT"))
        headers.append(("age", String(CachedAnswer.ageSeconds(createdMs: answer.createdMs, nowMs: nowMs))))
        headers.append(("x-request-id", pending.requestID))
        if !state.quotas.departments[pending.caller.department].limits.isUnlimited {
            let windows = loop.quotaWindows(state.quotas.settings, nowMs: nowMs)
            headers += state.quotas.headers(department: pending.caller.department, at: windows, nowMs: nowMs)
        }
        // The whole answer serialized into one buffer: one write, one iovec.
        var buffer = context.channel.allocator.buffer(capacity: 256 + answer.body.count + events.count * 8)
        writer.head(into: &buffer, status: 200, headers: headers, contentLength: summary.stream ? nil : answer.body.count,
                    closing: loop.draining)
        if summary.stream {
            for event in events { writer.body(ByteBuffer(bytes: event), into: &buffer) }
        } else {
            writer.body(ByteBuffer(bytes: answer.body), into: &buffer)
        }
        let latency = Double((NIODeadline.now() - pending.started).nanoseconds) / 1e6
        // A hit uses no instance: the whole reservation goes back.
        loop.end(UsageRecord(
            timeMs: nowMs - Int64(latency), requestID: pending.requestID, department: state.table.departments[pending.caller.department].name,
            keyPrefix: pending.caller.keyPrefix, model: model, endpoint: pending.endpoint.name, instance: nil, status: 200,
            latencyMs: latency, ttftMs: summary.stream ? latency : nil, cache: .hit, stream: summary.stream,
            promptPreview: preview.flatMap { PromptPrivacy.preview($0, policy: state.table.departments[pending.caller.department].promptPreview) }),
            settling: admitted.reservation, spent: 0, in: state.quotas)
        writeEnd(context, with: buffer)
        return true
    }

    private func startExchange(_ admitted: AdmittedRequest, cache: CachePlan?) {
        guard let timers = exchangeTimers else { return }
        let exchange = Exchange(client: self, timers: timers, loop: loop, request: admitted, cache: cache)
        self.state = .forwarding(exchange)
        exchange.start()
    }

    // MARK: Writing answers

    /// Called by an exchange when its answer is complete, broke off, or never started.
    ///
    /// The connection's state is settled *before* the end of the response is written: a
    /// pipelined next request is handled synchronously right after that write.
    func exchangeFinished(_ exchange: Exchange, ending: Exchange.Ending) {
        guard case .forwarding(let current) = state, current === exchange else { return }
        switch ending {
        case .error(let error):
            state = .responding
            respond(.error(error), head: exchange.head, requestID: exchange.requestID, log: false)
        case .abort:
            state = .closed
            writer.abandon()
            context?.flush()
            context?.close(promise: nil)
        case .complete:
            guard let context else { return }
            writeEnd(context)
        }
    }

    /// Ends the answer being written: `pending` (its last bytes, if any) and the framing's end go
    /// out in one flush. A pipelined request waiting behind it goes next. A connection that does
    /// not stay open — or whose answer broke its own framing — is closed once the end is out.
    private func writeEnd(_ context: ChannelHandlerContext, with pending: ByteBuffer? = nil) {
        var buffer = pending ?? context.channel.allocator.buffer(capacity: 8)
        let wellFramed = writer.end(into: &buffer)
        if writer.request.keepAlive && !loop.draining && wellFramed {
            state = .idle
            guardHandler.responseCompleted()
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            if !pipeline.parts.isEmpty || pipeline.readHeld { drainPipelined(context) }
        } else {
            state = .closed
            context.writeAndFlush(wrapOutboundOut(buffer)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    /// Starts a forwarded answer: its head, framed by `contentLength` when the instance gave
    /// one and the body passes unchanged, else chunked. Written at the next flush.
    func beginAnswer(status: Int, headers: [(String, String)], contentLength: Int?) {
        guard let context else { return }
        var buffer = context.channel.allocator.buffer(capacity: 512)
        writer.head(into: &buffer, status: status, headers: headers, contentLength: contentLength, closing: loop.draining)
        context.write(wrapOutboundOut(buffer), promise: nil)
    }

    /// A part of a forwarded answer's body, framed by the writer; a length-framed part goes out
    /// as it came, without a copy.
    func writeResponseBody(_ part: ByteBuffer) {
        guard let context else { return }
        if let same = writer.passThrough(part) {
            context.write(wrapOutboundOut(same), promise: nil)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: part.readableBytes + 16)
        if writer.body(part, into: &buffer) { context.write(wrapOutboundOut(buffer), promise: nil) }
    }

    func flush() { context?.flush() }

    var clientWritable: Bool { context?.channel.isWritable ?? false }

    func closeNow() {
        state = .closed
        writer.abandon()
        context?.close(promise: nil)
    }

    private func respond(_ answer: LocalAnswer, head: HTTPRequestHead?, requestID: String?, log: Bool = true) {
        guard let context else { return }
        var headers: [(String, String)] = [("content-type", "application/json")]
        headers.reserveCapacity(6)
        if let requestID { headers.append(("x-request-id", requestID)) }
        headers += answer.headers
        let length = answer.body.utf8.count
        var buffer = context.channel.allocator.buffer(capacity: 256 + length)
        writer.head(into: &buffer, status: Int(answer.status.code), headers: headers, contentLength: length,
                    closing: loop.draining)
        writer.body(ByteBuffer(string: answer.body), into: &buffer)
        writeEnd(context, with: buffer)
        if log, let head, let error = answer.error {
            loop.logger.info("request refused", metadata: [
                "request_id": "\(requestID ?? "-")", "method": "\(head.method.rawValue)", "path": "\(head.uri)",
                "status": "\(error.status)", "code": "\(error.codeString)",
            ])
        }
    }

    /// Runs the usage report on the data plane's thread pool (SQLite blocks), then answers on
    /// this loop. Only the caller's own department is ever read.
    private func answerUsage(head: HTTPRequestHead, requestID: String, department: String, context: ChannelHandlerContext) {
        guard let reporter = loop.usageReporter else {
            respond(.error(.notFound(method: "GET", path: "/v1/usage")), head: head, requestID: requestID)
            return
        }
        // Reports read SQLite on a small thread pool: each loop lets a few wait there, and
        // refuses more rather than queue without bound behind a slow one.
        guard loop.usageReportsRunning < LoopContext.maxUsageReports else {
            respond(.error(.overloaded("too many usage reports at once")), head: head, requestID: requestID)
            return
        }
        loop.usageReportsRunning += 1
        let query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
        let loop = self.loop
        loop.threadPool.runIfActive(eventLoop: context.eventLoop) {
            try reporter(department, query)
        }.assumeIsolated().whenComplete { [weak self] result in
            loop.usageReportsRunning -= 1
            guard let self else { return }
            switch result {
            case .success(let answer):
                self.respond(LocalAnswer(status: HTTPResponseStatus(statusCode: answer.status), body: answer.body), head: head, requestID: requestID)
            case .failure(let error):
                // The report's own refusals come back as answers; a thrown error is the ledger's.
                self.loop.logger.error("usage report failed", metadata: ["request_id": "\(requestID)", "error": "\(error)"])
                self.respond(.error(.ledgerUnavailable), head: head, requestID: requestID)
            }
        }
    }
}
