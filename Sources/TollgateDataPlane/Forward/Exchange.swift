import Atomics
import Logging
import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateRedis

/// Forwards one request to an instance and streams the answer back, all on the connection's
/// event loop. Tries instances until one answers, within the attempt limit; once the first
/// byte of an answer went to the client there is no retry, only a close on failure
/// (the same line as swift-nio-examples' connect-proxy draws).
final class Exchange: UpstreamDelegate, SlotWaiter {
    /// How a forwarded request's answer ends.
    enum Ending {
        /// The answer is complete: write the end of the response.
        case complete
        /// The answer broke off after it started: only a close can tell the client.
        case abort
        /// Nothing was sent yet: answer with this error.
        case error(GatewayError)
    }

    private enum Phase {
        case starting
        /// Every instance it may use is full: waiting in this loop's line (`WaitingLine`).
        case queued(id: UInt64)
        case connecting(instance: Int)
        case awaitingHead(instance: Int, connection: UpstreamConnection)
        case streaming(instance: Int, connection: UpstreamConnection, keepAlive: Bool)
        case finished
    }

    /// The client connection, through its narrow interface (nil once the exchange finished).
    private var handler: (any ClientSide)?
    private let timers: ExchangeTimers
    private let loop: LoopContext
    private let state: GatewayState
    let requestID: String
    let head: ClientHead
    private let body: ByteBuffer
    let model: String
    let stream: Bool
    let department: Int
    let pool: Int
    private let received: NIODeadline
    private let caller: Caller
    private let endpoint: APIEndpoint
    private let summary: RequestSummary
    /// The gateway asked the instance for stream usage that the client did not ask for.
    private let injectedUsage: Bool
    private var usageFilter = InjectedUsageFilter()
    /// The instance's `usage`, wherever it is in the answer.
    private var usageWatcher = UsageWatcher()
    /// Body bytes still to come of an answer framed by its `Content-Length` (nil otherwise): the
    /// part that reaches it is the last one the usage watcher sees.
    private var bodyLeft: Int?
    private let reservation: QuotaBook.Reservation
    /// The cache's plan for this request (nil: not cacheable, or no cache).
    private let cache: CachePlan?
    /// The answer collected for the cache: a JSON body, or a stream being assembled.
    private var cacheBody: [UInt8]?
    private var assembler: StreamAssembler?
    /// The complete answer, when it may be shared: a leader's followers get it where the
    /// request ends (`LoopContext.end`); without one they go upstream themselves.
    private var flightAnswer: CachedAnswer?
    /// Usage is read from the answer (for the ledger or a quota).
    private let metered: Bool

    private var phase = Phase.starting
    /// The retry rule: which try is next, and what a failed one leads to (pure, in Core).
    private var failover: Failover
    private var counted: (instance: Int, generation: Int, identity: String)?
    private var status = 0
    private var firstByte: NIODeadline?
    /// When the request was written to the instance of the current try (metrics).
    private var sent: NIODeadline?
    private var firstChunk: NIODeadline?
    /// Its lane when the instances are full: the department's, or lower if the client asked.
    let lane: Lane
    /// Time spent in the waiting line, when it waited.
    private var queuedNs: Int64?
    /// Got its slot from the waiting line (a second wait is not taken).
    private var granted = false
    /// Counted in the loop's retries under way (the retry budget).
    private var retryCounted = false

    init(client handler: any ClientSide, timers: ExchangeTimers, loop: LoopContext, request admitted: AdmittedRequest,
         cache: CachePlan? = nil) {
        #if DEBUG
        LiveObjects.exchanges.wrappingIncrement(ordering: .relaxed)
        #endif
        self.timers = timers
        self.failover = Failover(maxAttempts: admitted.request.state.table.configuration.retry.attempts)
        let request = admitted.request, summary = admitted.summary, caller = request.caller, state = request.state
        let endpoint = request.endpoint, body = request.body
        self.reservation = admitted.reservation
        self.cache = cache
        if let cache, cache.store {
            if summary.stream { assembler = StreamAssembler(limitBytes: cache.policy.maxEntryBytes) } else { cacheBody = [] }
        }
        self.handler = handler
        self.loop = loop
        self.state = state
        self.requestID = request.requestID
        self.head = request.head
        self.model = admitted.model
        self.stream = summary.stream
        self.department = caller.department
        self.caller = caller
        self.endpoint = endpoint
        self.summary = summary
        self.pool = admitted.pool
        self.received = request.started
        // Usage is metered from the instance's own count; a stream reports it only when asked.
        self.metered = loop.usageSink != nil || !state.quotas.departments[caller.department].limits.isUnlimited
        // A stream to be stored asks for usage too, so that a replayed hit can carry it.
        self.injectedUsage = summary.stream && !summary.includeUsage && endpoint != .embeddings && (metered || cache?.store == true)
        self.body = injectedUsage ? bodyAskingForUsage(body) : body
        self.lane = Lane.effective(declared: state.table.departments[caller.department].lane,
                                   header: request.head.priority)
    }

    #if DEBUG
    deinit { LiveObjects.exchanges.wrappingDecrement(ordering: .relaxed) }
    #endif

    private var config: GatewayConfiguration { state.table.configuration }

    func start() {
        loop.counters.activeRequests.wrappingIncrement(ordering: .relaxed)
        timers.exchange = self
        timers.setRequest(received + .nanoseconds(config.timeouts.request.nanoseconds))
        tryNext()
    }

    // MARK: Choosing and connecting

    private func tryNext() {
        if case .finished = phase { return }
        let excluding: [Int]
        switch failover.next() {
        case .giveUp(let error):
            return fail(error ?? .noInstanceAvailable(model: model))
        case .pick(let tried):
            excluding = tried
        }
        let retry = failover.attempts > 0
        if retry && !retryCounted {
            // The retry budget: retries under way at most a share of the requests in flight.
            let active = loop.counters.activeRequests.load(ordering: .relaxed)
            guard config.retry.budget.allows(retrying: loop.waitingLine.retrying, inFlight: active) else {
                loop.counters.retriesDenied.wrappingIncrement(ordering: .relaxed)
                return fail(failover.lastError ?? .noInstanceAvailable(model: model))
            }
        }
        // A first try leaves the slots kept for higher lanes (`SlotReserve`); a retry was admitted already.
        guard let instance = loop.select(state, department: department, pool: pool, excluding: excluding, lane: retry ? nil : lane) else {
            // The first try of a request whose instances are all busy waits for a slot; a retry
            // does not (every other instance is full: sending it again only adds load).
            if !retry && !granted && loop.everyEligibleIsFull(state, department: department, pool: pool, lane: lane) { return waitForSlot() }
            loop.counters.noInstance.wrappingIncrement(ordering: .relaxed)
            return fail(failover.lastError ?? .noInstanceAvailable(model: model))
        }
        if !retry && !granted {
            loop.waitingLine.charge(pool: pool, department: department, weight: state.table.departments[department].queueWeight, lane: lane,
                                    cost: reservation.tokens)
        }
        if failover.began(instance) {
            loop.counters.retries.wrappingIncrement(ordering: .relaxed)
            if !retryCounted {
                retryCounted = true
                loop.waitingLine.retrying += 1
            }
        }
        let info = state.table.instances[instance]
        loop.began(instance: instance, lane: lane)
        counted = (instance, loop.generation, info.identity)
        let connections = loop.connectionPool(for: info.url)
        if let connection = connections.takeIdle() {
            send(on: connection, instance: instance)
            return
        }
        phase = .connecting(instance: instance)
        let timeout = TimeAmount.nanoseconds(config.timeouts.connect.nanoseconds)
        connections.connect(timeout: timeout).assumeIsolated().whenComplete { [self] result in
            guard case .connecting(let current) = phase, current == instance else {
                // The request ended (client gone, timeout) while we connected: keep the connection.
                if case .success(let connection) = result { connections.release(connection) }
                return
            }
            switch result {
            case .success(let connection):
                send(on: connection, instance: instance)
            case .failure(let error):
                attemptFailed(instance: instance, .connectFailed, reason: "connect: \(error)",
                              error: .upstreamUnavailable("\(info.name): \(describe(error))"))
            }
        }
    }

    // MARK: Waiting for a slot

    private func waitForSlot() {
        let settings = config.admission
        let bound = SlotShare.of(limit: settings[lane].maxQueue, loops: loop.loopCount, loop: loop.index, instance: 0)
        let offer = loop.waitingLine.enqueue(
            self, pool: pool, department: department, departmentName: state.table.departments[department].name,
            weight: state.table.departments[department].queueWeight, lane: lane, cost: reservation.tokens, settings: settings,
            boundShare: bound)
        switch offer {
        case .queued(let id):
            phase = .queued(id: id)
        case .full:
            queuedNs = 0
            fail(.queueFull(lane: lane, retryAfter: GatewayError.shedRetryAfter(lane)))
        }
    }

    func slotGranted(waitedNs: Int64) {
        guard case .queued = phase else { return }
        queuedNs = waitedNs
        granted = true
        phase = .starting
        tryNext()
    }

    func queueTimedOut(waitedNs: Int64) {
        guard case .queued = phase else { return }
        queuedNs = waitedNs
        phase = .starting
        fail(.queueTimeout(lane: lane, waitedMs: waitedNs / 1_000_000, retryAfter: GatewayError.shedRetryAfter(lane)))
    }

    private func send(on connection: UpstreamConnection, instance: Int) {
        phase = .awaitingHead(instance: instance, connection: connection)
        sent = .now()
        connection.handler.delegate = self
        loop.counters.upstreamRequests.wrappingIncrement(ordering: .relaxed)
        // A small body goes out in the head's buffer: one write and one iovec for the request.
        if body.readableBytes > 0, body.readableBytes <= ResponseWriter.coalesceLimit {
            var request = upstreamHead(for: state.table.instances[instance], room: body.readableBytes)
            var rest = body
            request.writeBuffer(&rest)
            connection.handler.send(answeringHEAD: head.method == .HEAD, serializedHead: request, body: nil)
        } else {
            connection.handler.send(answeringHEAD: head.method == .HEAD, serializedHead: upstreamHead(for: state.table.instances[instance]), body: body)
        }
        timers.setTry(.now() + .nanoseconds(config.timeouts.perTry.nanoseconds))
    }

    /// A try failed before any answer reached the client: the failover rule says whether it
    /// counts against the instance; the in-flight slot is released and the next try begins.
    private func attemptFailed(instance: Int, _ failure: Failover.Failure, reason: String, error: GatewayError) {
        timers.setTry(nil)
        releaseInFlight()
        phase = .starting
        guard case .retry(blame: true) = failover.failed(failure, error: error) else { return tryNext() }
        loop.counters.upstreamFailures.wrappingIncrement(ordering: .relaxed)
        let info = state.table.instances[instance]
        loop.monitor.reportFailure(identity: info.identity, name: info.name, reason: reason)
        loop.logger.notice("upstream try failed", metadata: [
            "request_id": "\(requestID)", "department": "\(state.table.departments[department].name)", "instance": "\(info.name)", "reason": "\(reason)", "attempt": "\(failover.attempts)",
        ])
        tryNext()
    }

    private func releaseInFlight() {
        if let c = counted {
            loop.ended(instance: c.instance, generation: c.generation, identity: c.identity, lane: lane)
            counted = nil
        }
    }

    // MARK: Upstream events

    func upstreamRead(_ part: UpstreamPart) {
        switch phase {
        case .awaitingHead(let instance, let connection):
            guard case .head(let upstreamHead) = part else { return }
            timers.setTry(nil)
            let code = upstreamHead.status
            if code == 101 || code < 200 {
                // 1xx are skipped by the decoder; a 101 would switch the connection to another
                // protocol (and the decoder stops there). An instance has no reason to: this try
                // failed, and the connection is not reused.
                connection.handler.delegate = nil
                connection.handler.close()
                let name = state.table.instances[instance].name
                attemptFailed(instance: instance, .switchedProtocols, reason: "status \(code)",
                              error: .upstreamUnavailable("\(name) answered \(code)"))
                return
            }
            let info = state.table.instances[instance]
            // A saturation answer while every other instance is full too: no retry, it would
            // only be refused again (or add to a queue inside another instance).
            if Failover.isSaturation(code) && loop.everyEligibleIsFull(state, department: department, pool: pool, excluding: failover.tried) {
                failover.stopRetrying()
            }
            switch failover.answered(status: code, error: .upstreamUnavailable("\(info.name) answered \(code)")) {
            case .retry:
                connection.handler.delegate = nil
                connection.handler.close()
                timers.setTry(nil)
                releaseInFlight()
                phase = .starting
                loop.counters.upstreamFailures.wrappingIncrement(ordering: .relaxed)
                loop.monitor.reportFailure(identity: info.identity, name: info.name, reason: "status \(code)")
                loop.logger.notice("upstream try failed", metadata: [
                    "request_id": "\(requestID)", "instance": "\(info.name)", "reason": "status \(code)", "attempt": "\(failover.attempts)",
                ])
                return tryNext()
            case .deliver(let blame):
                if blame { loop.monitor.reportFailure(identity: info.identity, name: info.name, reason: "status \(code)") }
            }
            status = code
            firstByte = .now()
            phase = .streaming(instance: instance, connection: connection, keepAlive: upstreamHead.keepAlive)
            // Framed by the instance's length when the body passes unchanged; a body the gateway
            // edits (the usage event taken out) or one of unknown length is sent chunked. (An
            // answer to HEAD, a 204 or 304 keeps the instance's length: the writer sends no body.)
            let length = injectedUsage || upstreamHead.head.known.transferEncoding != nil ? nil : upstreamHead.head.contentLength
            if case .contentLength(let declared) = upstreamHead.head.framing { bodyLeft = declared }
            handler?.beginAnswer(status: code, forwarding: upstreamHead, contentLength: length) { writeGatewayHeaders(into: &$0) }
            if handler?.clientWritable == false { connection.handler.pauseReading() }
        case .streaming(_, let connection, let keepAlive):
            switch part {
            case .head:
                break
            case .body(let buffer):
                if firstChunk == nil { firstChunk = .now() }
                if status == 200 { collectForCache(buffer) }
                if injectedUsage && status == 200 {
                    if let forward = usageFilter.filter(buffer) { handler?.writeResponseBody(forward) }
                } else {
                    if metered {
                        let last = bodyLeft.map { buffer.readableBytes >= $0 } ?? false
                        buffer.withUnsafeReadableBytes { usageWatcher.feed($0, last: last) }
                    }
                    bodyLeft = bodyLeft.map { $0 - buffer.readableBytes }
                    handler?.writeResponseBody(buffer)
                }
            case .end:
                if injectedUsage, let rest = usageFilter.remainder() { handler?.writeResponseBody(rest) }
                storeInCache()
                connection.handler.delegate = nil
                if keepAlive {
                    connection.pool.release(connection)
                } else {
                    connection.handler.close()
                }
                finish(.complete, outcome: "ok")
            }
        default:
            break
        }
    }

    private func collectForCache(_ buffer: ByteBuffer) {
        guard let limit = cache?.policy.maxEntryBytes else { return }
        if assembler != nil {
            buffer.withUnsafeReadableBytes { assembler!.feed(Array($0)) }
        } else if cacheBody != nil {
            if cacheBody!.count + buffer.readableBytes > limit {
                cacheBody = nil  // over the size limit: not stored
            } else {
                buffer.withUnsafeReadableBytes { cacheBody!.append(contentsOf: $0) }
            }
        }
    }

    /// A complete answer: store it (when it qualifies) and keep it for the single flight's followers.
    private func storeInCache() {
        guard let cache else { return }
        var answer: CachedAnswer?
        if status == 200 {
            let body = assembler.flatMap { $0.assembled() } ?? cacheBody
            if let body, cache.policy.admits(status: status, bodyBytes: body.count) {
                answer = CachedAnswer(status: 200, contentType: "application/json", body: body, createdMs: wallClockMs(), model: model)
            }
        }
        if let answer, cache.store, cache.redis.isAvailable {
            let ttl = TimeAmount.nanoseconds(cache.policy.ttl.nanoseconds)
            _ = cache.redis.set(cache.redisKey, to: answer.encoded(), expiresIn: ttl)
        }
        flightAnswer = answer
    }

    func upstreamReadComplete() {
        if case .streaming = phase { handler?.flush() }
    }

    func upstreamClosed(error: (any Error)?) {
        switch phase {
        case .awaitingHead(let instance, let connection):
            let name = state.table.instances[instance].name
            // A reused connection the instance had closed while idle is retried once, unblamed;
            // an answer that could not be read is the instance's fault, reused or not.
            let garbled = error is UpstreamProtocolError
            attemptFailed(instance: instance, .closedBeforeHead(reused: connection.served > 0 && !garbled),
                          reason: garbled ? "\(error!)" : "closed: \(error.map(describe) ?? "eof")",
                          error: .upstreamUnavailable(garbled ? "\(name) sent an answer that is not valid HTTP/1.1" : "\(name) closed the connection"))
        case .streaming:
            // The answer had started: the client cannot be told otherwise than by a close.
            finish(.abort, outcome: "upstream_closed")
        default:
            break
        }
    }

    // MARK: Client events and timeouts

    func clientClosed() {
        switch phase {
        case .queued(let id):
            // It leaves the line at once; its row says 499 and its reservation goes back.
            loop.waitingLine.cancel(id, pool: pool)
        case .awaitingHead(_, let connection), .streaming(_, let connection, _):
            connection.handler.delegate = nil
            connection.handler.close()  // cancels the generation on the instance
        default:
            break
        }
        if status == 0 { status = 499 }
        handler = nil
        finish(.abort, outcome: "client_closed")
    }

    func clientWritabilityChanged(_ writable: Bool) {
        guard case .streaming(_, let connection, _) = phase else { return }
        if writable { connection.handler.resumeReading() } else { connection.handler.pauseReading() }
    }

    func tryTimedOut() {
        guard case .awaitingHead(let instance, let connection) = phase else { return }
        connection.handler.delegate = nil
        connection.handler.close()
        attemptFailed(instance: instance, .timedOut, reason: "timeout", error: .upstreamTimeout)
    }

    func requestTimedOut() {
        switch phase {
        case .connecting:
            fail(.upstreamTimeout)
        case .awaitingHead(_, let connection):
            connection.handler.delegate = nil
            connection.handler.close()
            fail(.upstreamTimeout)
        case .streaming(_, let connection, _):
            connection.handler.delegate = nil
            connection.handler.close()
            finish(.abort, outcome: "request_timeout")
        case .queued(let id):
            loop.waitingLine.cancel(id, pool: pool)
            fail(.upstreamTimeout)
        case .starting, .finished:
            break
        }
    }

    // MARK: Ending

    private func fail(_ error: GatewayError) {
        if case .finished = phase { return }
        status = error.status
        finish(.error(error), outcome: error.codeString)
    }

    private func finish(_ ending: Ending, outcome: String) {
        if case .finished = phase { return }
        let instance = counted.map { state.table.instances[$0.instance].name } ?? failover.tried.last.map { state.table.instances[$0].name }
        // Every path that lets a connection go detached from it already; this one makes sure a
        // connection never keeps a finished exchange (its delegate is a strong reference).
        switch phase {
        case .awaitingHead(_, let connection), .streaming(_, let connection, _):
            if connection.handler.delegate === self { connection.handler.delegate = nil }
        default:
            break
        }
        phase = .finished
        releaseInFlight()
        if retryCounted {
            retryCounted = false
            loop.waitingLine.retrying -= 1
        }
        loop.counters.activeRequests.wrappingDecrement(ordering: .relaxed)
        timers.clear()
        let handler = self.handler
        self.handler = nil
        handler?.exchangeFinished(self, ending: ending)
        let now = NIODeadline.now()
        loop.counters.metrics.forwarded(received: received, sent: sent, firstByte: firstByte, end: now)
        // Settle the quota: the instance's count when it gave one; the reservation when a
        // successful answer was sent without one (a stream cut before its usage); nothing when no
        // instance answered.
        let usage = injectedUsage ? usageFilter.usage : usageWatcher.usage
        // An error answer without usage generated nothing: it costs nothing (a 2,000,000-token
        // request refused by the instance's context limit was charged its whole reservation).
        let spent = usage?.totalTokens ?? (firstByte != nil && (200..<300).contains(status) ? reservation.tokens : 0)
        let latency = Double((now - received).nanoseconds) / 1e6
        if sent != nil {
            // Fair shares are settled to what the request really used.
            loop.waitingLine.settle(pool: pool, department: department, lane: lane, estimated: reservation.tokens,
                                    actual: usage?.totalTokens ?? reservation.tokens)
        }
        var errorCode: String?
        if case .error(let e) = ending { errorCode = e.codeString }
        loop.end(UsageRecord(
            timeMs: wallClockMs() - Int64(latency), requestID: requestID, department: state.table.departments[department].name,
            keyPrefix: caller.keyPrefix, model: model, endpoint: endpoint.name, instance: instance, status: status,
            promptTokens: usage?.promptTokens, completionTokens: usage?.completionTokens, latencyMs: latency,
            ttftMs: stream ? firstChunk.map { Double(($0 - received).nanoseconds) / 1e6 } : nil,
            cache: cache?.outcome ?? .off, stream: stream, cacheKey: cache?.key.hex,
            promptPreview: cache?.preview.flatMap { PromptPrivacy.preview($0, policy: state.table.departments[department].promptPreview) },
            reservedTokens: reservation.tokens, queueMs: queuedNs.map { Double($0) / 1e6 }, errorCode: errorCode),
            settling: reservation, spent: spent, in: state.quotas,
            // Nothing answered (an error before any byte, or a request that never reached an
            // instance — shed, or left while waiting): the request costs nothing.
            unanswered: firstByte == nil && (status >= 500 || sent == nil),
            completingFlight: cache?.leader == true ? cache?.key : nil, with: flightAnswer)
        loop.logger.info("request", metadata: [
            "request_id": "\(requestID)",
            "department": "\(state.table.departments[department].name)",
            "model": "\(model)",
            "instance": "\(instance ?? "-")",
            "status": "\(status)",
            "latency_ms": "\(Double((now - received).nanoseconds / 1000) / 1000)",
            "ttfb_ms": "\(firstByte.map { Double(($0 - received).nanoseconds / 1000) / 1000 } ?? -1)",
            "stream": "\(stream)",
            "attempts": "\(failover.attempts)",
            "outcome": "\(outcome)",
            "lane": "\(lane.name)",
            "queue_ms": "\(queuedNs.map { Double($0 / 1000) / 1000 } ?? 0)",
        ])
    }

    // MARK: Heads

    /// The request head sent to `instance`, written from the client's head as it arrived: its
    /// method and target bytes, its field lines minus hop-by-hop ones and its key, copied as they
    /// came, then the gateway's own. Names and values passed the strict parser (no CR, LF or
    /// NUL) or come from the gateway (the configuration's checked `api_key`).
    /// `room`: bytes to reserve after the head (a body written into the same buffer).
    private func upstreamHead(for instance: RoutingTable.Instance, room: Int = 0) -> ByteBuffer {
        // One allocation (`ByteBuffer()` then `reserveCapacity` made two).
        var buffer = ByteBufferAllocator().buffer(capacity: head.bytes.readableBytes + 256 + room)
        let parsed = head.parsed
        var forwardedFor: [UInt8]?
        head.bytes.withUnsafeReadableBytes { bytes in
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[parsed.methodRange]))
            buffer.writeStaticString(" ")
            buffer.writeString(instance.url.basePath)
            // Origin-form whatever the client sent: its path and query (an absolute-form target,
            // `http://host/v1/…`, which a server must accept, is routed by its path too).
            if parsed.path.isEmpty { buffer.writeStaticString("/") }
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[parsed.path]))
            if let query = parsed.query {
                buffer.writeStaticString("?")
                buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[query]))
            }
            buffer.writeStaticString(" HTTP/1.1\r\n")
            // Hop-by-hop: the fixed list, and whatever the client's `Connection` names.
            let listed = HeaderNames.listedInConnection(parsed, bytes)
            for field in parsed.fields {
                let name = UnsafeRawBufferPointer(rebasing: bytes[field.name])
                let value = UnsafeRawBufferPointer(rebasing: bytes[field.value])
                if HeaderNames.matches(name, anyOf: HeaderNames.droppedFromRequest) { continue }
                if let listed, HeaderNames.matches(name, anyOf: listed) { continue }
                if HeaderNames.isForTheGateway(name) { continue }
                if HeaderNames.matches(name, HeaderNames.forwardedFor) {
                    if forwardedFor == nil { forwardedFor = [] } else { forwardedFor! += [UInt8(ascii: ","), UInt8(ascii: " ")] }
                    forwardedFor! += value
                } else {
                    buffer.writeBytes(name)
                    buffer.writeStaticString(": ")
                    buffer.writeBytes(value)
                    buffer.writeStaticString("\r\n")
                }
            }
        }
        buffer.writeHeader("host", instance.hostHeader)
        buffer.writeHeader("content-length", String(body.readableBytes))
        buffer.writeHeader("x-request-id", requestID)
        if let client = handler?.remoteAddress {
            buffer.writeHeader("x-real-ip", client)
            buffer.writeStaticString("x-forwarded-for: ")
            if let forwardedFor {
                buffer.writeBytes(forwardedFor)
                buffer.writeStaticString(", ")
            }
            buffer.writeString(client)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("x-forwarded-proto: http\r\n")
        if let key = instance.apiKey {
            buffer.writeStaticString("authorization: Bearer ")
            buffer.writeString(key)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("\r\n")
        return buffer
    }

    /// The gateway's own headers on a forwarded answer, after the instance's (which the response
    /// writer copies from the head's bytes, without the hop-by-hop ones).
    private func writeGatewayHeaders(into buffer: inout ByteBuffer) {
        buffer.writeHeader("x-request-id", requestID)
        if let cache { buffer.writeStaticString(cache.outcome == .miss ? "x-cache: MISS\r\n" : "x-cache: BYPASS\r\n") }
        let quotas = state.quotas
        if !quotas.departments[department].limits.isUnlimited {
            let nowMs = wallClockMs()
            quotas.writeHeaders(into: &buffer, department: department, at: loop.quotaWindows(quotas.settings, nowMs: nowMs), nowMs: nowMs)
        }
    }
}

private func describe(_ error: any Error) -> String {
    if let e = error as? ChannelError {
        switch e {
        case .connectTimeout: return "connect timeout"
        case .eof: return "connection closed"
        default: return "\(e)"
        }
    }
    if let e = error as? IOError { return e.description }
    return "\(error)"
}
