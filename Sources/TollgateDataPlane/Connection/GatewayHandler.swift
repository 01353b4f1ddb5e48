import Atomics
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateRedis

/// The data plane's handler for one client connection. It reads a request (head, then body) off
/// the connection's bytes with its `RequestDecoder`, decides what it is — a local answer, an
/// error, or a request to forward — and hands forwarding to an `Exchange`. One request at a
/// time: later pipelined requests are queued until the response is complete.
final class GatewayHandler: ChannelDuplexHandler, ClientSide {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Where the connection is in its current request.
    private enum State {
        /// Waiting for a request head.
        case idle
        /// Collecting the body of a request that will be forwarded (the request is `receiving`).
        case receiving
        /// Reading and dropping the body of a request already answered with `answer`.
        case discarding(answer: LocalAnswer, close: Bool, head: ClientHead, requestID: String)
        /// An exchange is forwarding the request and streaming the answer.
        case forwarding(Exchange)
        /// `GET /v1/usage`: the department's own report, read off the event loop once the request is complete.
        case usageReport(head: ClientHead, requestID: String, department: String)
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
        var parts = CircularBuffer<ClientRequestPart>()
        /// A `read` was asked for and not passed on: it is passed on when the queue empties and
        /// the client reads again.
        var readHeld = false
        /// The queue is being handed on (a request answered synchronously meanwhile must not
        /// start a second pass).
        var draining = false
        /// A head the parser refused behind the queued requests: answered, and the connection
        /// closed, once they are.
        var refusal: GatewayError?
    }

    let loop: LoopContext
    /// The connection's idle and head timeouts, and its answers to no request.
    let connectionGuard: ConnectionGuard
    let remoteAddress: String
    private var state = State.idle {
        didSet { if case .receiving = state {} else { receiving = nil } }
    }
    /// The request whose body is being collected, while `state` is `.receiving`. Kept here, not
    /// in the enum's payload, so that each part of the body is added in place: taking it out of
    /// the enum and putting it back copied it, a retain and a release of each of its references,
    /// twice per request.
    private var receiving: GatewayRequest?
    private(set) var context: ChannelHandlerContext?
    private var pipeline = Pipeline()
    /// Frames every answer on this connection, and knows what the request being answered asks
    /// of it: its method (a `HEAD` gets no body, whichever path answers), HTTP/1.0, keep-alive.
    private var writer = ResponseWriter()
    /// The head of the forwarded answer being written, with the small body parts that followed
    /// it, not handed to the channel yet: it goes out at the next flush (the end of the instance's
    /// read), so that an answer read whole leaves in one write.
    private var unwritten: ByteBuffer?
    /// The last `Authorization` value on this connection and what it read as: a client sends the
    /// same key with every request, and its digest is not computed again for it. (The key's
    /// department, expiry and revocation are still looked up per request.)
    private var lastCredential: (value: [UInt8], credential: Authenticator.Credential)?
    /// Per-connection timers, re-armed by each request without rescheduling (see `DeadlineTimer`).
    private var bodyTimer: DeadlineTimer?
    /// The deadlines of the exchange in progress (per connection, re-armed by each request).
    private var exchangeTimers: ExchangeTimers?

    /// The gateway's strict request decoder, run here on each read (no handler between).
    private var decoder: RequestDecoder
    /// Bytes read and not decoded yet (part of a head, most often nothing).
    private var inbound = ByteBuffer()
    /// At most this many undecoded bytes (reads stop while a pipelined request waits, so only a
    /// head accumulates, and a head is bounded by the header limits).
    private let inboundCap: Int

    init(loop: LoopContext, idleTimeout: TimeAmount, headerTimeout: TimeAmount, remoteAddress: String, limits: RequestLimits,
         inboundCap: Int) {
        #if DEBUG
        LiveObjects.handlers.wrappingIncrement(ordering: .relaxed)
        #endif
        self.decoder = RequestDecoder(limits: limits)
        self.inboundCap = inboundCap
        self.loop = loop
        self.connectionGuard = ConnectionGuard(idleTimeout: idleTimeout, headerTimeout: headerTimeout)
        self.remoteAddress = remoteAddress
    }

    #if DEBUG
    deinit { LiveObjects.handlers.wrappingDecrement(ordering: .relaxed) }
    #endif

    /// A connection past a limit: answered with `error` once active, then closed; nothing it
    /// sends is read as a request.
    func refuseOnActive(_ error: GatewayError) {
        state = .closed
        connectionGone()  // not counted among the connections served
        connectionGuard.refuseOnActive(error)
    }

    var isIdle: Bool { if case .idle = state { true } else { false } }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        connectionGuard.attach(context)
        // Unowned, not weak: the timer is this handler's alone (see `ExchangeTimers` for why a
        // weak reference to a hot object costs on every retain).
        bodyTimer = DeadlineTimer(eventLoop: context.eventLoop) { [unowned self] in self.bodyTimedOut() }
        exchangeTimers = ExchangeTimers(eventLoop: context.eventLoop)
        loop.connections[ObjectIdentifier(self)] = self
        loop.counters.activeConnections.wrappingIncrement(ordering: .relaxed)
    }

    func channelActive(context: ChannelHandlerContext) {
        if connectionGuard.activated() { context.fireChannelActive() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        connectionGuard.detach()
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
        // Refused, or its last answer given: nothing more is read as a request.
        if case .closed = state { return }
        var incoming = unwrapInboundIn(data)
        connectionGuard.readArrived()
        defer { connectionGuard.readDecoded() }
        if inbound.readableBytes == 0 {
            inbound = incoming
        } else {
            inbound.writeBuffer(&incoming)
        }
        if inbound.readableBytes > inboundCap {
            // Cannot happen within the header limits; a peer that gets here is cut off.
            inbound = ByteBuffer()
            decodingFailed(ByteToMessageDecoderError.PayloadTooLargeError(), context: context)
            context.close(promise: nil)
            return
        }
        // Every part the bytes at hand complete, in order, until the connection closes.
        while context.channel.isActive {
            if case .closed = state { break }
            let part: ClientRequestPart
            do {
                guard let next = try decoder.next(&inbound) else { break }
                part = next
            } catch {
                decodingFailed(error, context: context)
                break
            }
            received(part, context: context)
        }
        // All read: the read's storage is let go (the parts handed on keep what they need).
        if inbound.readableBytes == 0 { inbound = ByteBuffer() }
    }

    private func received(_ part: ClientRequestPart, context: ChannelHandlerContext) {
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

    private func isHead(_ part: ClientRequestPart) -> Bool {
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
        if let refusal = pipeline.refusal, isIdle {
            pipeline.refusal = nil
            writer.request = ResponseWriter.Request(method: .GET, http10: false, keepAlive: false)
            state = .responding
            respond(.error(refusal), head: nil, requestID: nil)
            return
        }
        if pipeline.readHeld && context.channel.isWritable {
            pipeline.readHeld = false
            context.read()
        }
    }

    private func handle(_ part: ClientRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            receivedHead(head, context: context)
        case .body(var chunk):
            switch state {
            case .receiving:
                let limit = receiving!.state.table.configuration.limits.maxBodyBytes
                if receiving!.body.readableBytes + chunk.readableBytes > limit {
                    let pending = receiving!
                    state = .responding
                    writer.request.keepAlive = false
                    recordLocal(pending, status: 413, model: nil)
                    respond(.error(.bodyTooLarge(limit: limit)), head: pending.head, requestID: pending.requestID)
                    return
                }
                // In place: the body's buffer is unique while only `receiving` holds it.
                receiving!.appendBody(&chunk, limit: limit, allocator: context.channel.allocator)
            default:
                break  // discarding, or a body after an early answer
            }
        case .end:
            bodyTimer?.set(nil)
            switch state {
            case .receiving:
                let pending = receiving.take()!
                state = .responding
                dispatch(pending)
            case .discarding(let answer, let close, let head, let requestID):
                if close { writer.request.keepAlive = false }
                state = .responding
                respond(answer, head: head, requestID: requestID, log: answer.error != nil)
            case .usageReport(let head, let requestID, let department):
                state = .responding
                answerUsage(head: head, requestID: requestID, department: department)
            default:
                break
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connectionGuard.inactive()
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
        decodingFailed(error, context: context)
    }

    /// The decoder refused what it read (it reads nothing more after a refusal), or the
    /// connection failed.
    private func decodingFailed(_ error: any Error, context: ChannelHandlerContext) {
        if let refused = error as? RequestHeadError {
            // The parser refused a head (`RequestDecoder`, which then reads nothing more). Its
            // refusal (400, or 431 past the size limits) is the connection's last answer: at
            // once when nothing is being answered, else after the answers of the requests
            // before it, in order (a pipelined bad head must not cut into them).
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            let refusal: GatewayError = refused == .headTooLarge || refused == .tooManyFields || refused == .requestLineTooLong
                ? .headersTooLarge("Request headers exceed the gateway's limits (\(limits.maxHeaderBytes) bytes, \(limits.maxHeaderCount) fields): \(refused).")
                : .invalidRequest("Malformed HTTP request: \(refused).")
            if isIdle && pipeline.parts.isEmpty {
                connectionGuard.rejectAndClose(refusal)
                state = .closed
            } else {
                pipeline.refusal = refusal
            }
            return
        }
        if let refused = error as? ChunkedBodyError, case .receiving = state, let pending = receiving {
            // A chunked body that breaks its framing: the request is answered 400 and the
            // connection closed (nothing after it can be read in step).
            state = .responding
            writer.request.keepAlive = false
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            recordLocal(pending, status: 400, model: nil)
            respond(.error(.invalidRequest("Malformed chunked request body: \(refused).")), head: pending.head, requestID: pending.requestID)
            return
        }
        clientLeft()
        context.close(promise: nil)
    }

    private var limits: RequestLimits { loop.monitor.store.load().table.configuration.limits }

    // MARK: Request head

    private func receivedHead(_ head: ClientHead, context: ChannelHandlerContext) {
        connectionGuard.requestHeadReceived()
        loop.counters.requests.wrappingIncrement(ordering: .relaxed)
        // The decoder reads nothing after a CONNECT or an Upgrade request (the connection would
        // change protocols): answer it, then close.
        let method = head.method
        writer.request = ResponseWriter.Request(method: method, http10: head.isHTTP10,
                                                keepAlive: head.keepAlive && !loop.draining && !head.switchesProtocol)
        let requestID = Self.acceptedRequestID(head.requestID) ?? loop.nextRequestID()
        let state = loop.monitor.store.load()
        let table = state.table
        // Whatever the request turns out to be, its body (if any) must arrive in time: the
        // timer runs until `.end`, in every state that reads or drops a body.
        bodyTimer?.set(.now() + .nanoseconds(table.configuration.limits.bodyTimeout.nanoseconds))
        if method == .CONNECT {
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            self.state = .responding
            return respond(.error(.methodNotAllowed(method: "CONNECT", path: head.target)), head: head, requestID: requestID)
        }

        let expectsContinue = head.expectsContinue
        func early(_ answer: LocalAnswer, close: Bool = false) {
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            let declared = head.contentLength ?? 0
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
        // Routed on the path's bytes; a String of it is made only for an error's message.
        if head.pathIs("/v1/chat/completions") {
            endpoint = .chatCompletions
        } else if head.pathIs("/v1/completions") {
            endpoint = .completions
        } else if head.pathIs("/v1/embeddings") {
            endpoint = .embeddings
        } else if head.pathIs("/healthz") || head.pathIs("/health") {
            guard method == .GET || method == .HEAD else { return early(.error(.methodNotAllowed(method: method.rawValue, path: head.path))) }
            self.state = .discarding(answer: LocalAnswers.health(state, now: loop.clock()), close: false, head: head, requestID: requestID)
            return
        } else if head.pathIs("/v1/models") {
            guard method == .GET else { return early(.error(.methodNotAllowed(method: method.rawValue, path: head.path))) }
            if case .failure(let e) = Authenticator.authenticate(head.credential, state: state, nowMs: wallClockMs()) { return early(.error(e)) }
            self.state = .discarding(answer: LocalAnswers.models(table), close: false, head: head, requestID: requestID)
            return
        } else if head.pathIs("/v1/usage") {
            guard method == .GET else { return early(.error(.methodNotAllowed(method: method.rawValue, path: head.path))) }
            let caller: Caller
            switch Authenticator.authenticate(head.credential, state: state, nowMs: wallClockMs()) {
            case .failure(let e): return early(.error(e))
            case .success(let c): caller = c
            }
            self.state = .usageReport(head: head, requestID: requestID, department: table.departments[caller.department].name)
            return
        } else {
            return early(.error(.notFound(method: method.rawValue, path: head.path)))
        }
        guard method == .POST else {
            return early(.error(.methodNotAllowed(method: method.rawValue, path: head.path)))
        }
        let caller: Caller
        switch Authenticator.authenticate(credential(of: head), state: state, nowMs: wallClockMs()) {
        case .failure(let e): return early(.error(e))
        case .success(let c): caller = c
        }
        let limit = table.configuration.limits.maxBodyBytes
        if let length = head.contentLength, length > limit {
            // Answer at once and close rather than read a body we will not take.
            loop.counters.clientErrors.wrappingIncrement(ordering: .relaxed)
            writer.request.keepAlive = false
            self.state = .responding
            recordLocal(GatewayRequest(state: state, head: head, requestID: requestID, caller: caller, endpoint: endpoint,
                                       body: ByteBuffer(), started: .now()), status: 413, model: nil)
            respond(.error(.bodyTooLarge(limit: limit)), head: head, requestID: requestID)
            return
        }
        if expectsContinue { connectionGuard.writeContinue() }
        // No buffer yet: a body that arrives whole is kept as the slice it came in (see `.body`).
        let body = ByteBuffer()
        let now = NIODeadline.now()
        self.state = .receiving
        receiving = GatewayRequest(state: state, head: head, requestID: requestID, caller: caller, endpoint: endpoint, body: body,
                                   started: now)
    }

    private func bodyTimedOut() {
        switch state {
        case .receiving:
            guard let pending = receiving.take() else { return }
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
            latencyMs: latency, cache: .off, stream: stream), settling: reservation, spent: 0, in: pending.state.quotas,
            // A client that left before any answer: its request costs nothing either (as in the waiting line).
            unanswered: status == 499)
    }

    /// `head`'s credential, read again only when its `Authorization` differs from the last one
    /// on this connection.
    private func credential(of head: ClientHead) -> Authenticator.Credential {
        guard let index = head.parsed.known.authorization else { return .none }
        let range = head.parsed.fields[index].value
        let same = head.bytes.withUnsafeReadableBytes { bytes in
            guard let last = lastCredential, last.value.count == range.count else { return false }
            return last.value.withUnsafeBytes { $0.elementsEqual(UnsafeRawBufferPointer(rebasing: bytes[range])) }
        }
        if same, let last = lastCredential { return last.credential }
        let credential = head.credential
        // Bounded: a header of kilobytes is read, not kept.
        lastCredential = range.count <= 256 ? (head.bytes.getBytes(at: head.bytes.readerIndex + range.lowerBound, length: range.count) ?? [], credential) : nil
        return credential
    }

    /// A client's `X-Request-Id` is kept when it is short and printable.
    static func acceptedRequestID(_ id: String?) -> String? {
        guard let id, !id.isEmpty, id.utf8.count <= 128,
              id.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
        return id
    }

    // MARK: Dispatch

    private func dispatch(_ pending: GatewayRequest) {
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
            if let reply = CachedReply(answer, for: admitted, loop: loop) {
                answerFromCache(reply, admitted, preview: lookup.keys.preview)
            } else {
                lookUpInRedis(admitted, lookup)
            }
        case .lookup(let lookup):
            lookUpInRedis(admitted, lookup)
        }
    }

    private func lookUpInRedis(_ admitted: AdmittedRequest, _ lookup: CacheLookup) {
        let requestID = admitted.request.requestID
        // The handler is held until Redis answers (and a follower until its flight ends), not
        // referenced weakly: a client that left meanwhile takes the handler with it, and its
        // request must still end here (`.abandoned`: its row, its reservation given back).
        lookup.lookUp(admitted, loop: loop,
                      isWanted: { [self] in
                          guard context != nil, case .responding = state else { return false }
                          return true
                      },
                      flightEnded: { [self] answer in followerResumed(requestID: requestID, answer: answer) },
                      found: { [self] found in cacheFound(found, admitted, lookup) })
    }

    private func cacheFound(_ found: CacheLookup.Found, _ admitted: AdmittedRequest, _ lookup: CacheLookup) {
        let preview = lookup.keys.preview
        switch found {
        case .abandoned:
            // The client left while Redis answered: its reservation back, and its row.
            recordLocal(admitted.request, status: 499, model: admitted.model, stream: admitted.summary.stream, releasing: admitted.reservation)
        case .hit(let reply):
            answerFromCache(reply, admitted, preview: preview)
        case .lead(let plan), .bypass(let plan):
            startExchange(admitted, cache: plan)
        case .follow:
            // Unowned: kept in this handler's own state and called only by it.
            state = .following(Follower(requestID: admitted.request.requestID, abandon: { [unowned self] in
                // The client left while it waited: nothing was used, and the request has its row.
                self.recordLocal(admitted.request, status: 499, model: admitted.model, stream: admitted.summary.stream,
                                 releasing: admitted.reservation)
            }, resume: { [unowned self] answer in
                if let answer, let reply = CachedReply(answer, for: admitted, loop: self.loop) {
                    self.answerFromCache(reply, admitted, preview: preview)
                } else {
                    self.startExchange(admitted, cache: lookup.followerPlan(loop: self.loop))
                }
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

    private func followerResumed(requestID: String, answer: CachedAnswer?) {
        guard case .following(let f) = state, f.requestID == requestID, context != nil else { return }
        state = .responding
        f.resume(answer)
    }

    /// Answers from a stored answer, in one write. A hit uses no instance: the whole reservation
    /// goes back.
    private func answerFromCache(_ reply: CachedReply, _ admitted: AdmittedRequest, preview: String?) {
        let pending = admitted.request, state = pending.state, summary = admitted.summary
        guard let context, case .responding = self.state else {
            recordLocal(pending, status: 499, model: admitted.model, stream: summary.stream, releasing: admitted.reservation)
            return
        }
        loop.counters.cacheHits.wrappingIncrement(ordering: .relaxed)
        // The whole answer serialized into one buffer: one write, one iovec.
        var buffer = context.channel.allocator.buffer(capacity: reply.sizeHint)
        writer.head(into: &buffer, status: 200, headers: reply.headers, contentLength: reply.contentLength, closing: loop.draining)
        if let json = reply.json {
            writer.body(ByteBuffer(bytes: json), into: &buffer)
        } else {
            for event in reply.events { writer.body(ByteBuffer(bytes: event), into: &buffer) }
        }
        let latency = Double((NIODeadline.now() - pending.started).nanoseconds) / 1e6
        let department = state.table.departments[pending.caller.department]
        loop.end(UsageRecord(
            timeMs: wallClockMs() - Int64(latency), requestID: pending.requestID, department: department.name,
            keyPrefix: pending.caller.keyPrefix, model: admitted.model, endpoint: pending.endpoint.name, instance: nil, status: 200,
            latencyMs: latency, ttftMs: summary.stream ? latency : nil, cache: .hit, stream: summary.stream,
            promptPreview: preview.flatMap { PromptPrivacy.preview($0, policy: department.promptPreview) }),
            settling: admitted.reservation, spent: 0, in: state.quotas)
        writeEnd(context, with: buffer)
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
            flush()
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
        var buffer: ByteBuffer
        if var earlier = unwritten {
            unwritten = nil
            if var pending { earlier.writeBuffer(&pending) }
            buffer = earlier
        } else {
            buffer = pending ?? ByteBuffer()  // an empty ByteBuffer allocates nothing
        }
        let wellFramed = writer.end(into: &buffer)
        if writer.request.keepAlive && !loop.draining && wellFramed {
            state = .idle
            connectionGuard.responseCompleted()
            // A length-framed answer has nothing left to write: only the flush.
            if buffer.readableBytes > 0 { context.write(wrapOutboundOut(buffer), promise: nil) }
            context.flush()
            if !pipeline.parts.isEmpty || pipeline.readHeld || pipeline.refusal != nil { drainPipelined(context) }
        } else {
            state = .closed
            context.writeAndFlush(wrapOutboundOut(buffer)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    /// Starts a forwarded answer: its head, framed by `contentLength` when the instance gave
    /// one and the body passes unchanged, else chunked. Written at the next flush.
    func beginAnswer(status: Int, forwarding upstream: UpstreamHead, contentLength: Int?, gatewayFields: (inout ByteBuffer) -> Void) {
        guard let context else { return }
        releaseUnwritten(context)
        let room = min(contentLength ?? 0, ResponseWriter.coalesceLimit)
        var buffer = context.channel.allocator.buffer(capacity: upstream.bytes.readableBytes + 384 + room)
        writer.head(into: &buffer, status: status, forwarding: upstream, contentLength: contentLength, closing: loop.draining,
                    gatewayFields: gatewayFields)
        unwritten = buffer
    }

    /// Hands the held head (and what was added to it) to the channel.
    private func releaseUnwritten(_ context: ChannelHandlerContext) {
        guard let held = unwritten else { return }
        unwritten = nil
        context.write(wrapOutboundOut(held), promise: nil)
    }

    /// A part of a forwarded answer's body, framed by the writer; a length-framed part goes out
    /// as it came, without a copy.
    func writeResponseBody(_ part: ByteBuffer) {
        guard let context else { return }
        if var held = unwritten, part.readableBytes <= ResponseWriter.coalesceLimit, held.readableBytes <= ResponseWriter.coalesceLimit {
            unwritten = nil  // not shared while it grows (no copy on write)
            writer.body(part, into: &held)
            unwritten = held
            return
        }
        releaseUnwritten(context)
        if let same = writer.passThrough(part) {
            context.write(wrapOutboundOut(same), promise: nil)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: part.readableBytes + 16)
        if writer.body(part, into: &buffer) { context.write(wrapOutboundOut(buffer), promise: nil) }
    }

    func flush() {
        guard let context else { return }
        releaseUnwritten(context)
        context.flush()
    }

    var clientWritable: Bool { context?.channel.isWritable ?? false }

    func closeNow() {
        state = .closed
        unwritten = nil
        writer.abandon()
        context?.close(promise: nil)
    }

    private func respond(_ answer: LocalAnswer, head: ClientHead?, requestID: String?, log: Bool = true) {
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
                "request_id": "\(requestID ?? "-")", "method": "\(head.method.rawValue)", "path": "\(head.target)",
                "status": "\(error.status)", "code": "\(error.codeString)",
            ])
        }
    }

    /// `GET /v1/usage`, answered once the report is read (`LocalAnswers.usage`).
    private func answerUsage(head: ClientHead, requestID: String, department: String) {
        LocalAnswers.usage(department: department, uri: head.target, requestID: requestID, loop: loop) { [weak self] answer in
            self?.respond(answer, head: head, requestID: requestID)
        }
    }
}
