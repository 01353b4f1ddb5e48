/// The retry and failover rule of one forwarded request, as a pure state machine (no I/O, no
/// clock): what to do after each try. The exchange asks it before every try and tells it how
/// each try ended; it answers with an action.
///
/// The rule (nginx's `proxy_next_upstream` for `error timeout http_502 http_503 http_504`, and
/// swift-nio-examples' connect-proxy line: no retry once the answer started):
/// - at most `maxAttempts` tries, each on an instance not tried yet;
/// - a failed connect, a close before the answer's head, a per-try timeout, a 101 or other 1xx
///   head: another try, counted against the instance;
/// - a 502/503/504 head: another try while tries remain, else that answer is delivered as is;
/// - no retry at all once `stopRetrying()` was called: the retry budget is spent, or every
///   eligible instance is full and the answer was a saturation answer (503, 429) — retrying it
///   on another full instance only adds load (then the 502/503/504 is delivered as it is);
/// - a pooled connection the instance had already closed (closed before the head, having served
///   earlier requests) is retried once without counting a try or blaming the instance.
public struct Failover: Sendable, Equatable {
    public let maxAttempts: Int
    /// Tries begun, not counting a free retry of a stale pooled connection.
    public private(set) var attempts = 0
    /// Instances tried, in order.
    public private(set) var tried: [Int] = []
    /// Why the last try failed: what the client gets when no try is left.
    public private(set) var lastError: GatewayError?
    private var staleRetryUsed = false
    /// No further try (the retry budget is spent, or the pool is saturated).
    public private(set) var retriesStopped = false

    public init(maxAttempts: Int) {
        self.maxAttempts = max(1, maxAttempts)
    }

    public enum Next: Sendable, Equatable {
        /// Choose an instance other than these.
        case pick(excluding: [Int])
        /// No try is left: answer the client with the last error (nil: none happened).
        case giveUp(GatewayError?)
    }

    /// Before each try.
    public func next() -> Next {
        attempts < maxAttempts && !(retriesStopped && attempts > 0) ? .pick(excluding: tried) : .giveUp(lastError)
    }

    /// No retry from now on: the next failure is the client's answer.
    public mutating func stopRetrying() { retriesStopped = true }

    /// Whether a status is a saturation answer (the instance is full, not broken).
    public static func isSaturation(_ status: Int) -> Bool { status == 503 || status == 429 }

    /// A try begins on `instance`. Returns whether it is a retry (for the retry counter).
    @discardableResult
    public mutating func began(_ instance: Int) -> Bool {
        attempts += 1
        tried.append(instance)
        return attempts > 1
    }

    /// How a try ended before any byte reached the client.
    public enum Failure: Sendable, Equatable {
        case connectFailed
        /// The connection closed before the answer's head; `reused`: it had served requests before.
        case closedBeforeHead(reused: Bool)
        case timedOut
        /// A 101 or other 1xx head: no answer an instance should give.
        case switchedProtocols
    }

    public enum Action: Sendable, Equatable {
        /// Try again (`next()`); `blame`: count the failure against the instance.
        case retry(blame: Bool)
        /// Pass the instance's answer on as it is; `blame`: count it against the instance.
        case deliver(blame: Bool)
    }

    /// A try failed with `failure`; the client would get `error` if no try is left.
    public mutating func failed(_ failure: Failure, error: GatewayError) -> Action {
        if case .closedBeforeHead(reused: true) = failure, !staleRetryUsed {
            // A kept-alive connection the instance had closed while idle: not its fault.
            staleRetryUsed = true
            attempts -= 1
            tried.removeLast()
            return .retry(blame: false)
        }
        lastError = error
        return .retry(blame: true)
    }

    /// The answer's head arrived with `status`.
    /// `error` is made only when the answer leads to a retry (every answer passes here: its
    /// message is a String built per request otherwise).
    public mutating func answered(status: Int, error: @autoclosure () -> GatewayError) -> Action {
        switch status {
        case 502, 503, 504:
            if attempts < maxAttempts && !retriesStopped {
                lastError = error()
                return .retry(blame: true)
            }
            return .deliver(blame: true)
        default:
            return .deliver(blame: false)
        }
    }
}
