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
final class GatewayHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Where the connection is in its current request.
    private enum State {
        /// Waiting for a request head.
        case idle
        /// Collecting the body of a request that will be forwarded.
        case receiving(PendingRequest)
        /// Reading and dropping the body of a request already answered with `answer`.
        case discarding(answer: LocalAnswer, close: Bool, head: HTTPRequestHead, requestID: String)
        /// An exchange is forwarding the request and streaming the answer.
        case forwarding(Exchange)
        /// `GET /v1/usage`: the department's own report, read off the event loop once the request is complete.
        case usageReport(head: HTTPRequestHead, requestID: String, department: String)
        /// A local answer is being written (or computed off the loop).
        case responding
        case closed
    }

    /// Who is calling: the department and, for a key from the ledger, its prefix.
    struct Caller {
        var department: Int
        var keyPrefix: String?
    }

    struct PendingRequest {
        /// The snapshot the request started with: its department index, limits and routing
        /// stay consistent even if a reload swaps the table meanwhile.
        var state: GatewayState
        var head: HTTPRequestHead
        var requestID: String
        var caller: Caller
        var endpoint: Endpoint
        var body: ByteBuffer
        var started: NIODeadline
    }

    enum Endpoint {
        case chatCompletions, completions, embeddings
        /// As the ledger's `endpoint` column names it.
        var name: String {
            switch self {
            case .chatCompletions: "chat"
            case .completions: "completions"
            case .embeddings: "embeddings"
            }
        }
    }

    struct LocalAnswer {
        var status: HTTPResponseStatus
        var body: String
        var headers: [(String, String)] = []
        var error: GatewayError?

        static func error(_ e: GatewayError) -> LocalAnswer {
            var headers: [(String, String)] = []
            if let r = e.retryAfter { headers.append(("retry-after", String(r))) }
            return LocalAnswer(status: HTTPResponseStatus(statusCode: e.status), body: e.body, headers: headers, error: e)
        }
    }

    let loop: LoopContext
    let guardHandler: ConnectionGuard
    let remoteAddress: String
    private var state = State.idle
    private(set) var context: ChannelHandlerContext?
    private var keepAlive = true
    /// Pipelined request parts waiting for the current answer to end (NIO's pipelining
    /// handler did this before; it also stopped reading during every answer, which cost two
    /// `epoll_ctl` calls per request).
    private var pipelined = CircularBuffer<HTTPServerRequestPart>()
    private var readHeld = false
    private var drainingPipelined = false
    /// Frames every answer on this connection (see `ResponseWriter`).
    private var writer = ResponseWriter()
    /// The method of the request being answered: a `HEAD` gets no body, whichever path answers.
    private var answeringMethod = HTTPMethod.GET
    /// The request being answered is HTTP/1.0 (no chunked framing for it).
    private var answeringHTTP10 = false
    /// Per-connection timers, re-armed by each request without rescheduling (see `DeadlineTimer`).
    private var bodyTimer: DeadlineTimer?
    private(set) var requestTimer: DeadlineTimer?
    private(set) var tryTimer: DeadlineTimer?

    /// How a forwarded request's answer ends.
    enum Ending {
        /// The answer is complete: write the end of the response.
        case complete
        /// The answer broke off after it started: only a close can tell the client.
        case abort
        /// Nothing was sent yet: answer with this error.
        case error(GatewayError)
    }

    init(loop: LoopContext, guardHandler: ConnectionGuard, remoteAddress: String) {
        self.loop = loop
        self.guardHandler = guardHandler
        self.remoteAddress = remoteAddress
    }

    var isIdle: Bool { if case .idle = state { true } else { false } }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        bodyTimer = DeadlineTimer(eventLoop: context.eventLoop) { [weak self] in self?.bodyTimedOut() }
        requestTimer = DeadlineTimer(eventLoop: context.eventLoop) { [weak self] in
            if case .forwarding(let exchange) = self?.state { exchange.requestTimedOut() }
        }
        tryTimer = DeadlineTimer(eventLoop: context.eventLoop) { [weak self] in
            if case .forwarding(let exchange) = self?.state { exchange.tryTimedOut() }
        }
        loop.connections[ObjectIdentifier(self)] = self
        loop.counters.activeConnections.wrappingIncrement(ordering: .relaxed)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        connectionGone()
        bodyTimer?.cancel()
        requestTimer?.cancel()
        tryTimer?.cancel()
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
        if !pipelined.isEmpty || (isHead(part) && (!isIdle || !context.channel.isWritable)) {
            pipelined.append(part)
            return
        }
        handle(part, context: context)
    }

    /// Reads go on while an answer is written (so a client that leaves is noticed at once); they
    /// are held while a pipelined request waits, which bounds what is queued to one read, and
    /// while the client is not reading (the channel is not writable), which bounds what is
    /// written to it to one read's answers past the high-water mark.
    func read(context: ChannelHandlerContext) {
        if pipelined.isEmpty && context.channel.isWritable {
            context.read()
        } else {
            readHeld = true
        }
    }

    private func isHead(_ part: HTTPServerRequestPart) -> Bool {
        if case .head = part { true } else { false }
    }

    /// Hands queued pipelined parts on, in order, once the connection is idle again.
    private func drainPipelined(_ context: ChannelHandlerContext) {
        guard !drainingPipelined else { return }  // a request answered while draining: the loop below goes on
        drainingPipelined = true
        defer { drainingPipelined = false }
        while let part = pipelined.first {
            if isHead(part) && (!isIdle || !context.channel.isWritable) { return }
            pipelined.removeFirst()
            handle(part, context: context)
        }
        if readHeld && context.channel.isWritable {
            readHeld = false
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
                    keepAlive = false
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
                if close { keepAlive = false }
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
        if case .forwarding(let exchange) = state { exchange.clientClosed() }
        if let f = follower {
            follower = nil
            f.abandon()
        }
        state = .closed
        connectionGone()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .forwarding(let exchange) = state {
            exchange.clientWritabilityChanged(context.channel.isWritable)
        }
        if context.channel.isWritable {
            if !pipelined.isEmpty {
                if isIdle { drainPipelined(context) }
            } else if readHeld {
                readHeld = false
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
        if case .forwarding(let exchange) = state { exchange.clientClosed() }
        state = .closed
        context.close(promise: nil)
    }

    private var limits: RequestLimits { loop.monitor.store.load().table.configuration.limits }

    // MARK: Request head

    private func receivedHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guardHandler.requestHeadReceived()
        loop.counters.requests.wrappingIncrement(ordering: .relaxed)
        answeringMethod = head.method
        answeringHTTP10 = head.version.major == 1 && head.version.minor == 0
        // NIO's parser stops for good after a CONNECT or an Upgrade request (it expects the
        // connection to change protocols): answer it, then close.
        let switchesProtocol = head.method == .CONNECT || head.headers.contains(name: "upgrade")
        keepAlive = head.isKeepAlive && !loop.draining && !switchesProtocol
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
                keepAlive = false
                self.state = .responding
                respond(answer, head: head, requestID: requestID)
                return
            }
            self.state = .discarding(answer: answer, close: close, head: head, requestID: requestID)
        }

        let endpoint: Endpoint
        switch path {
        case "/v1/chat/completions": endpoint = .chatCompletions
        case "/v1/completions": endpoint = .completions
        case "/v1/embeddings": endpoint = .embeddings
        case "/healthz", "/health":
            guard head.method == .GET || head.method == .HEAD else { return early(.error(.methodNotAllowed(method: head.method.rawValue, path: String(path)))) }
            self.state = .discarding(answer: healthAnswer(state), close: false, head: head, requestID: requestID)
            return
        case "/v1/models":
            guard head.method == .GET else { return early(.error(.methodNotAllowed(method: head.method.rawValue, path: String(path)))) }
            if case .failure(let e) = authenticate(head, state: state) { return early(.error(e)) }
            self.state = .discarding(answer: modelsAnswer(table), close: false, head: head, requestID: requestID)
            return
        case "/v1/usage":
            guard head.method == .GET else { return early(.error(.methodNotAllowed(method: head.method.rawValue, path: String(path)))) }
            let caller: Caller
            switch authenticate(head, state: state) {
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
        switch authenticate(head, state: state) {
        case .failure(let e): return early(.error(e))
        case .success(let c): caller = c
        }
        let limit = table.configuration.limits.maxBodyBytes
        if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > limit {
            // Answer at once and close rather than read a body we will not take.
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            keepAlive = false
            self.state = .responding
            recordLocal(PendingRequest(state: state, head: head, requestID: requestID, caller: caller, endpoint: endpoint,
                                       body: ByteBuffer(), started: .now()), status: 413, model: nil)
            respond(.error(.bodyTooLarge(limit: limit)), head: head, requestID: requestID)
            return
        }
        if expectsContinue { guardHandler.writeContinue() }
        let expected = head.headers.first(name: "content-length").flatMap(Int.init) ?? 0
        let body = context.channel.allocator.buffer(capacity: min(max(expected, 256), limit))
        let now = NIODeadline.now()
        self.state = .receiving(PendingRequest(
            state: state, head: head, requestID: requestID, caller: caller, endpoint: endpoint, body: body,
            started: now))
    }

    private func bodyTimedOut() {
        switch state {
        case .receiving(let pending):
            state = .responding
            keepAlive = false
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            recordLocal(pending, status: 408, model: nil)
            respond(.error(.requestTimeout), head: pending.head, requestID: pending.requestID)
        case .discarding(_, _, let head, let requestID), .usageReport(let head, let requestID, _):
            // A body nobody will use, still not finished: answer 408 and close.
            state = .responding
            keepAlive = false
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            respond(.error(.requestTimeout), head: head, requestID: requestID)
        default:
            break
        }
    }

    private func authenticate(_ head: HTTPRequestHead, state: GatewayState) -> Result<Caller, GatewayError> {
        let table = state.table
        guard let value = head.headers.first(name: "authorization") else {
            if let anonymous = table.anonymousDepartment { return .success(Caller(department: anonymous, keyPrefix: nil)) }
            return .failure(.invalidAPIKey("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."))
        }
        let utf8 = value.utf8
        guard utf8.count > 7, HeaderNames.matches(String(value.prefix(7)), HeaderNames.bearerPrefix) else {
            return .failure(.invalidAPIKey("The Authorization header must be 'Bearer YOUR_KEY'."))
        }
        let key = utf8.dropFirst(7).drop { $0 == UInt8(ascii: " ") }
        // Hash first, then look up: the time taken does not depend on the key's content.
        let digest = KeyDigest(hashing: key)
        if let entry = state.keys.lookup(digest) {
            if let expires = entry.expiresMs, expires <= wallClockMs() {
                return .failure(.invalidAPIKey("Incorrect API key provided."))
            }
            return .success(Caller(department: entry.department, keyPrefix: entry.prefix))
        }
        if let d = table.department(forKey: digest) { return .success(Caller(department: d, keyPrefix: nil)) }
        return .failure(.invalidAPIKey("Incorrect API key provided."))
    }

    /// Ends a request that passed authentication but was answered here (or left by its client
    /// before an instance was asked): its row, and its reservation given back if it had one.
    private func recordLocal(_ pending: PendingRequest, status: Int, model: String?, stream: Bool = false,
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

    private func dispatch(_ pending: PendingRequest) {
        let state = pending.state
        let table = state.table
        if loop.ledgerSaturated {
            // The ledger cannot keep up (a full or failing disk): refuse rather than serve a
            // request whose row would be lost. No row for the refusal either.
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            respond(.error(.ledgerSaturated), head: pending.head, requestID: pending.requestID)
            return
        }
        let summary: RequestSummary
        do {
            summary = try pending.body.withUnsafeReadableBytes { buffer throws(RequestBodyError) in
                try RequestScanner.scan(buffer)
            }
        } catch {
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            recordLocal(pending, status: 400, model: nil)
            respond(.error(.invalidRequest(error.message, param: error.param)), head: pending.head, requestID: pending.requestID)
            return
        }
        guard let model = summary.model, !model.isEmpty else {
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            recordLocal(pending, status: 400, model: nil, stream: summary.stream)
            respond(.error(.invalidRequest("You must provide a model parameter.", param: "model")), head: pending.head, requestID: pending.requestID)
            return
        }
        guard let pool = table.pool(forModel: model) else {
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            recordLocal(pending, status: 404, model: model, stream: summary.stream)
            respond(.error(.modelNotFound(model)), head: pending.head, requestID: pending.requestID)
            return
        }
        // Admission: reserve the request and its possible tokens against the department's quotas,
        // on this process's counters (kept in step with the other replicas by `QuotaSync`).
        let nowMs = wallClockMs()
        let windows = loop.quotaWindows(table.configuration.quotas, nowMs: nowMs)
        let cost = reservationEstimate(promptBytes: summary.promptRange?.count ?? pending.body.readableBytes,
                                       maxTokens: summary.maxTokens, choices: summary.choices,
                                       defaultMaxTokens: table.configuration.quotas.defaultMaxTokens)
        admitLocally(pending, state: state, summary: summary, model: model, pool: pool, cost: cost, windows: windows, nowMs: nowMs)
    }

    private func admitLocally(_ pending: PendingRequest, state: GatewayState, summary: RequestSummary, model: String, pool: Int,
                              cost: Int, windows: QuotaCalendar.Current, nowMs: Int64) {
        switch state.quotas.admit(department: pending.caller.department, tokens: cost, at: windows, nowMs: nowMs) {
        case .admitted(let reservation):
            forward(pending, state: state, summary: summary, model: model, pool: pool, reservation: reservation)
        case .rejected(let meter, let limit, let used, let requested, let wait):
            refuse(pending, state: state, summary: summary, model: model, meter: meter, limit: limit, used: used,
                   requested: requested, wait: wait, windows: windows, nowMs: nowMs)
        }
    }

    private func refuse(_ pending: PendingRequest, state: GatewayState, summary: RequestSummary, model: String, meter: QuotaMeter,
                        limit: Int, used: Int, requested: Int, wait: Int, windows: QuotaCalendar.Current, nowMs: Int64) {
        loop.counters.quotaRejections.wrappingIncrement(ordering: .relaxed)
        recordLocal(pending, status: 429, model: model, stream: summary.stream)
        var answer = LocalAnswer.error(.quotaExceeded(
            department: state.table.departments[pending.caller.department].name, meter: meter, limit: limit, used: used,
            requested: requested, retryAfter: wait))
        answer.headers += state.quotas.headers(department: pending.caller.department, at: windows, nowMs: nowMs)
        respond(answer, head: pending.head, requestID: pending.requestID)
    }

    private func forward(_ pending: PendingRequest, state: GatewayState, summary: RequestSummary, model: String, pool: Int,
                         reservation: QuotaBook.Reservation) {
        let table = state.table
        let departmentName = table.departments[pending.caller.department].name
        let policy = table.configuration.departments[pending.caller.department].cache ?? table.configuration.cache
        guard policy.mode != .off, let redis = loop.redis else {
            return startExchange(pending, state: state, summary: summary, model: model, pool: pool, reservation: reservation, cache: nil)
        }
        let directives = pending.head.headers.contains(name: "cache-control")
            ? CacheDirectives(cacheControl: pending.head.headers[canonicalForm: "cache-control"].joined(separator: ","))
            : CacheDirectives(cacheControl: "")
        let decision = policy.decide(temperature: summary.temperature, hasSeed: summary.hasSeed, directives: directives)
        guard decision.lookup || decision.store,
              let keys = cacheKeys(pending, summary: summary, policy: policy, department: departmentName, model: model) else {
            return startExchange(pending, state: state, summary: summary, model: model, pool: pool, reservation: reservation, cache: nil)
        }
        let (key, redisKey, preview) = (keys.key, keys.redisKey, keys.preview)
        func plan(_ outcome: CacheOutcome, store: Bool, leader: Bool) -> CachePlan {
            CachePlan(key: key, redisKey: redisKey, policy: policy, store: store && redis.isAvailable, outcome: outcome, redis: redis, leader: leader, preview: preview)
        }
        guard redis.isAvailable, decision.lookup else {
            // Redis away, or `Cache-Control: no-cache`: no lookup (the answer may still be stored).
            loop.counters.cacheBypasses.wrappingIncrement(ordering: .relaxed)
            return startExchange(pending, state: state, summary: summary, model: model, pool: pool, reservation: reservation,
                                 cache: plan(.bypass, store: decision.store, leader: false))
        }
        // The loop's own tier first; Redis when it has nothing.
        if let answer = loop.localCache.get(redisKey, nowMs: wallClockMs()),
           answerFromCache(answer, pending: pending, state: state, summary: summary, model: model, reservation: reservation, preview: preview) {
            return
        }
        redis.get(redisKey).assumeIsolated().whenComplete { [weak self] result in
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
                    self.loop.localCache.put(redisKey, answer: answer, ttlMs: policy.ttl.milliseconds, nowMs: wallClockMs())
                    if let remember = keys.remember { self.loop.keyMemo.store(remember.entry(pending.body), slot: remember.slot) }
                    if self.answerFromCache(answer, pending: pending, state: state, summary: summary, model: model,
                                            reservation: reservation, preview: preview) {
                        return
                    }
                }
                fallthrough
            case .success(nil):
                // A miss: lead a single flight, or wait for the one already going.
                let bound = NIOLoopBound(self, eventLoop: self.loop.eventLoop)
                let requestID = pending.requestID
                let eventLoop = self.loop.eventLoop
                let leads = self.loop.singleFlight.join(key) { answer in
                    eventLoop.execute { bound.value.followerResumed(requestID: requestID, answer: answer) }
                }
                if leads {
                    self.loop.counters.cacheMisses.wrappingIncrement(ordering: .relaxed)
                    self.startExchange(pending, state: state, summary: summary, model: model, pool: pool, reservation: reservation,
                                       cache: plan(.miss, store: decision.store, leader: true))
                } else {
                    self.follower = Follower(requestID: requestID, abandon: { [weak self] in
                        // The client left while it waited: nothing was used, and the request has its row.
                        self?.recordLocal(pending, status: 499, model: model, stream: summary.stream, releasing: reservation)
                    }) { [weak self] answer in
                        guard let self else { return }
                        if let answer, self.answerFromCache(answer, pending: pending, state: state, summary: summary, model: model,
                                                            reservation: reservation, preview: preview) {
                            return
                        }
                        self.loop.counters.cacheMisses.wrappingIncrement(ordering: .relaxed)
                        self.startExchange(pending, state: state, summary: summary, model: model, pool: pool, reservation: reservation,
                                           cache: plan(.miss, store: decision.store, leader: false))
                    }
                }
            case .failure:
                self.loop.counters.cacheBypasses.wrappingIncrement(ordering: .relaxed)
                self.startExchange(pending, state: state, summary: summary, model: model, pool: pool, reservation: reservation,
                                   cache: plan(.bypass, store: false, leader: false))
            }
        }
    }

    /// A request's cache keys and prompt preview; `remember` is set when its body was not in the
    /// loop's memo (it is put there once the request proves to be asked again, on a Redis hit).
    struct CacheKeys {
        let key: CacheKey
        let redisKey: String
        let preview: String?
        let remember: (slot: Int, entry: (ByteBuffer) -> CacheKeyMemo.Entry)?
    }

    /// The request's cache key, Redis key and preview: from the loop's memo when this very body
    /// was seen before, else canonicalized, hashed and read. Nil when the body cannot be
    /// canonicalized (then it is not cached).
    private func cacheKeys(_ pending: PendingRequest, summary: RequestSummary, policy: CachePolicy, department: String,
                           model: String) -> CacheKeys? {
        let namespace = policy.namespace(department: department)
        let endpoint = pending.endpoint.name
        return pending.body.withUnsafeReadableBytes { body -> CacheKeys? in
            let (slot, known) = loop.keyMemo.lookup(body, namespace: namespace, endpoint: endpoint, model: model)
            if let known { return CacheKeys(key: known.key, redisKey: known.redisKey, preview: known.preview, remember: nil) }
            guard let canonical = try? CanonicalJSON.canonicalize(Array(body)) else { return nil }
            let key = CacheKey.make(namespace: namespace, endpoint: endpoint, model: model, canonicalBody: canonical)
            let redisKey = cacheRedisKey(namespace: namespace, key: key)
            let preview = promptPreview(body: pending.body, range: summary.promptRange)
            return CacheKeys(key: key, redisKey: redisKey, preview: preview, remember: (slot, { body in
                CacheKeyMemo.Entry(body: Array(body.readableBytesView), namespace: namespace, endpoint: endpoint, model: model,
                                   key: key, redisKey: redisKey, preview: preview)
            }))
        }
    }

    /// A request waiting for an identical one to come back from an instance.
    struct Follower {
        let requestID: String
        /// The client closed before the flight ended.
        let abandon: () -> Void
        let resume: (CachedAnswer?) -> Void
    }
    private var follower: Follower?

    fileprivate func followerResumed(requestID: String, answer: CachedAnswer?) {
        guard let f = follower, f.requestID == requestID, case .responding = state, context != nil else { return }
        follower = nil
        f.resume(answer)
    }

    /// Answers from a stored answer: as JSON, or replayed as an SSE stream. `false` when it
    /// cannot be replayed in the form asked for (then the request goes upstream).
    private func answerFromCache(_ answer: CachedAnswer, pending: PendingRequest, state: GatewayState, summary: RequestSummary,
                                 model: String, reservation: QuotaBook.Reservation, preview: String?) -> Bool {
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
                    method: answeringMethod, close: !keepAlive || loop.draining, http10: answeringHTTP10)
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
            settling: reservation, spent: 0, in: state.quotas)
        writeEnd(context, with: buffer)
        return true
    }

    private func startExchange(_ pending: PendingRequest, state: GatewayState, summary: RequestSummary, model: String, pool: Int,
                               reservation: QuotaBook.Reservation, cache: CachePlan?) {
        let exchange = Exchange(
            handler: self, loop: loop, state: state, requestID: pending.requestID, head: pending.head, body: pending.body,
            model: model, summary: summary, caller: pending.caller, endpoint: pending.endpoint, pool: pool, received: pending.started,
            reservation: reservation, cache: cache)
        self.state = .forwarding(exchange)
        exchange.start()
    }

    // MARK: Writing answers

    /// Called by an exchange when its answer is complete, broke off, or never started.
    ///
    /// The connection's state is settled *before* the end of the response is written: a
    /// pipelined next request is handled synchronously right after that write.
    func exchangeFinished(_ exchange: Exchange, ending: Ending) {
        guard case .forwarding(let current) = state, current === exchange else { return }
        requestTimer?.set(nil)
        tryTimer?.set(nil)
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
        if keepAlive && !loop.draining && wellFramed {
            state = .idle
            guardHandler.responseCompleted()
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            if !pipelined.isEmpty || readHeld { drainPipelined(context) }
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
        writer.head(into: &buffer, status: status, headers: headers, contentLength: contentLength, method: answeringMethod,
                    close: !keepAlive || loop.draining, http10: answeringHTTP10)
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
                    method: head?.method ?? answeringMethod, close: !keepAlive || loop.draining)
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

    private func modelsAnswer(_ table: RoutingTable) -> LocalAnswer {
        var body = "{\"object\":\"list\",\"data\":["
        var first = true
        for pool in table.pools {
            for model in pool.models {
                if !first { body += "," }
                first = false
                body += "{\"id\":"
                appendJSONString(model, to: &body)
                body += ",\"object\":\"model\",\"created\":0,\"owned_by\":"
                appendJSONString(pool.name, to: &body)
                body += "}"
            }
        }
        body += "]}\n"
        return LocalAnswer(status: .ok, body: body)
    }

    private func healthAnswer(_ state: GatewayState) -> LocalAnswer {
        let now = loop.clock()
        let table = state.table
        var available = 0
        var body = "{\"status\":"
        var instances = ""
        for inst in table.instances {
            let a = state.availability[inst.index]
            let ok = a.isAvailable(at: now)
            if ok { available += 1 }
            if !instances.isEmpty { instances += "," }
            instances += "{\"name\":"
            appendJSONString(inst.name, to: &instances)
            instances += ",\"pool\":"
            appendJSONString(table.pools[inst.pool].name, to: &instances)
            instances += ",\"available\":\(ok),\"probe_up\":\(a.probeUp),\"ejected\":\(now < a.ejectedUntil)}"
        }
        body += available > 0 ? "\"ok\"" : "\"degraded\""
        body += ",\"instances_available\":\(available),\"instances_total\":\(table.instances.count),\"instances\":[\(instances)]}\n"
        return LocalAnswer(status: available > 0 ? .ok : .serviceUnavailable, body: body)
    }
}
