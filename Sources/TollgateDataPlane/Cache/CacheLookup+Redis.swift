import Atomics
import NIOCore
import TollgateCore
import TollgateRedis

/// Step 5 after `CacheLookup.start`: the Redis lookup, then the single flight.
extension CacheLookup {
    /// What the lookup decided.
    enum Found {
        /// The client left while Redis answered: nothing was used.
        case abandoned
        /// A stored answer, in the form the request asked for (kept in this loop's tier too).
        case hit(CachedReply)
        /// Not stored: go upstream leading the single flight (the followers wait for this answer).
        case lead(CachePlan)
        /// Not stored, and an identical request is already at an instance: wait for its answer.
        case follow
        /// Redis failed: go upstream without the cache.
        case bypass(CachePlan)
    }

    /// Looks the request up in Redis; on a miss, leads a single flight or follows the one going.
    /// - Parameters:
    ///   - isWanted: whether the request still waits (its client may leave meanwhile); checked
    ///     before the single flight is joined, so a departed client never follows.
    ///   - flightEnded: for `.follow`, called later on this loop with the leader's answer (nil:
    ///     the leader had none to share; go upstream with `followerPlan`).
    ///   - found: called once on this loop.
    func lookUp(_ admitted: AdmittedRequest, loop: LoopContext, isWanted: @escaping () -> Bool,
                flightEnded: @escaping (CachedAnswer?) -> Void, found: @escaping (Found) -> Void) {
        let keys = self.keys
        redis.get(keys.redisKey).assumeIsolated().whenComplete { result in
            guard isWanted() else { return found(.abandoned) }
            let stored: [UInt8]?
            switch result {
            case .failure:
                loop.counters.cacheBypasses.wrappingIncrement(ordering: .relaxed)
                return found(.bypass(self.plan(.bypass, store: false, leader: false)))
            case .success(let value):
                stored = value
            }
            if let stored, let answer = try? CachedAnswer.decode(stored) {
                // Asked again: keep the answer in this loop's memory, and the body's key.
                loop.localCache.put(keys.redisKey, answer: answer, ttlMs: self.policy.ttl.milliseconds, nowMs: wallClockMs())
                if let remember = keys.remember { loop.keyMemo.store(remember.entry(admitted.request.body), slot: remember.slot) }
                if let reply = CachedReply(answer, for: admitted, loop: loop) { return found(.hit(reply)) }
                // Not replayable in the form asked for: as a miss.
            }
            let eventLoop = loop.eventLoop
            let resume = NIOLoopBound(flightEnded, eventLoop: eventLoop)
            let leads = loop.singleFlight.join(keys.key) { answer in
                eventLoop.execute { resume.value(answer) }
            }
            if leads {
                loop.counters.cacheMisses.wrappingIncrement(ordering: .relaxed)
                found(.lead(self.plan(.miss, store: self.decision.store, leader: true)))
            } else {
                found(.follow)
            }
        }
    }

    /// A follower whose leader had no answer to share goes upstream itself, as a miss.
    func followerPlan(loop: LoopContext) -> CachePlan {
        loop.counters.cacheMisses.wrappingIncrement(ordering: .relaxed)
        return plan(.miss, store: decision.store, leader: false)
    }
}

/// A stored answer as this request asked for it: the JSON as stored, or replayed as a stream of
/// server-sent events; with the cache's and the quota's headers.
struct CachedReply {
    let answer: CachedAnswer
    let headers: [(String, String)]
    /// The JSON body; nil for a stream.
    let json: [UInt8]?
    /// The replayed events of a stream.
    let events: [[UInt8]]

    /// Nil when the answer cannot be replayed in the form asked for (then the request goes upstream).
    init?(_ answer: CachedAnswer, for admitted: AdmittedRequest, loop: LoopContext) {
        let request = admitted.request, state = request.state, summary = admitted.summary
        if summary.stream {
            guard let replay = try? StreamReplayer.events(from: answer.body, includeUsage: summary.includeUsage) else { return nil }
            events = replay
            json = nil
        } else {
            events = []
            json = answer.body
        }
        let nowMs = wallClockMs()
        var headers: [(String, String)] = []
        headers.reserveCapacity(12)
        headers.append(("content-type", summary.stream ? "text/event-stream" : answer.contentType))
        if summary.stream { headers.append(("cache-control", "no-cache")) }
        headers.append(("x-cache", "HIT"))
        headers.append(("age", String(CachedAnswer.ageSeconds(createdMs: answer.createdMs, nowMs: nowMs))))
        headers.append(("x-request-id", request.requestID))
        if !state.quotas.departments[request.caller.department].limits.isUnlimited {
            let windows = loop.quotaWindows(state.quotas.settings, nowMs: nowMs)
            headers += state.quotas.headers(department: request.caller.department, at: windows, nowMs: nowMs)
        }
        self.headers = headers
        self.answer = answer
    }

    /// The body's length when it is not a stream.
    var contentLength: Int? { json?.count }

    /// Bytes to reserve for the whole answer.
    var sizeHint: Int { 256 + answer.body.count + events.count * 8 }
}
