import NIOCore

/// What an `Exchange` may do to the client connection it answers, and nothing more: write the
/// answer (its head with the framing, body parts, flushes), know whether the client is reading,
/// and say how the answer ended. `GatewayHandler` implements it; its state, pipelining and
/// framing stay its own.
protocol ClientSide: AnyObject {
    /// The client's address, for `X-Forwarded-For` and `X-Real-IP`.
    var remoteAddress: String { get }
    /// False while the client is not reading: stop reading from the instance.
    var clientWritable: Bool { get }
    /// Starts the answer: the instance's fields from its head's bytes (without hop-by-hop ones),
    /// then the gateway's own, which `gatewayFields` writes as header lines; framed by
    /// `contentLength` when known, else chunked.
    func beginAnswer(status: Int, forwarding upstream: UpstreamHead, contentLength: Int?, gatewayFields: (inout ByteBuffer) -> Void)
    func writeResponseBody(_ part: ByteBuffer)
    func flush()
    /// The answer is complete, broke off, or never started (then the client gets the error).
    func exchangeFinished(_ exchange: Exchange, ending: Exchange.Ending)
}

/// The two deadlines of a forwarded request, kept per client connection and re-armed by each
/// request without rescheduling (see `DeadlineTimer`): the whole request (`timeouts.request`)
/// and the current try (`timeouts.per_try`). The exchange in progress attaches itself and
/// receives the expiries directly.
///
/// No weak references here, on purpose: an object that is ever referenced weakly gets a side
/// table, and from then on every retain and release of it takes the runtime's slow path (4% of
/// the data plane's CPU in a profile, most of it on the exchange). So the exchange is held
/// strongly while it runs and let go by `clear()` (its `finish`) or `cancel()` (the connection's
/// handler removed), and the timers' actions reach this object unowned: each `DeadlineTimer`
/// here is this object's alone, and its action can only run while the timer, and so its
/// owner, is alive.
final class ExchangeTimers {
    private var request: DeadlineTimer?
    private var perTry: DeadlineTimer?
    /// The exchange in progress (set by its `start`, nil once it finished).
    var exchange: Exchange?

    init(eventLoop: any EventLoop) {
        request = DeadlineTimer(eventLoop: eventLoop) { [unowned self] in self.exchange?.requestTimedOut() }
        perTry = DeadlineTimer(eventLoop: eventLoop) { [unowned self] in self.exchange?.tryTimedOut() }
    }

    func setRequest(_ deadline: NIODeadline?) { request?.set(deadline) }
    func setTry(_ deadline: NIODeadline?) { perTry?.set(deadline) }

    /// Disarms both and detaches the exchange.
    func clear() {
        exchange = nil
        request?.set(nil)
        perTry?.set(nil)
    }

    func cancel() {
        exchange = nil
        request?.cancel()
        perTry?.cancel()
    }
}
