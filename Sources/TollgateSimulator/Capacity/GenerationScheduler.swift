import NIOConcurrencyHelpers
import NIOCore

/// The generation slots of one instance, shared by all of its connections (whatever event loop they
/// run on): at most `capacity` generations run at once, the others wait first come, first served.
///
/// A lock guards the counters and the queue; nobody blocks on it for longer than a few instructions,
/// and waiters are woken through promises, so their handlers resume on their own event loops.
final class GenerationScheduler: Sendable {
    /// What `acquire` decided.
    enum Admission {
        /// A slot is yours: release it with `release()` when the generation ends.
        case granted
        /// Wait for `future`; once it succeeds the slot is yours. Give up the place with `cancel(ticket)`.
        case queued(ticket: UInt64, future: EventLoopFuture<Void>)
    }

    /// A queued request gave up its place (its client went away).
    struct Cancelled: Error {}

    private struct Waiter {
        var ticket: UInt64
        var promise: EventLoopPromise<Void>
    }

    private struct State {
        var capacity: Int
        var active = 0
        var queue = CircularBuffer<Waiter>()
        var nextTicket: UInt64 = 0

        var hasFreeSlot: Bool { self.capacity <= 0 || self.active < self.capacity }

        /// Hands free slots to waiters; returns the promises to succeed once the lock is released.
        mutating func admitWaiters() -> [EventLoopPromise<Void>] {
            var admitted: [EventLoopPromise<Void>] = []
            while self.hasFreeSlot, let next = self.queue.popFirst() {
                self.active += 1
                admitted.append(next.promise)
            }
            return admitted
        }
    }

    private let state: NIOLockedValueBox<State>

    init(capacity: Int) {
        self.state = NIOLockedValueBox(State(capacity: capacity))
    }

    /// Generations holding a slot.
    var active: Int { self.state.withLockedValue { $0.active } }

    /// Generations waiting for a slot.
    var queued: Int { self.state.withLockedValue { $0.queue.count } }

    /// Asks for a slot for a generation whose handler runs on `eventLoop`.
    func acquire(on eventLoop: any EventLoop) -> Admission {
        self.state.withLockedValue { state in
            if state.queue.isEmpty, state.hasFreeSlot {
                state.active += 1
                return .granted
            }
            let promise = eventLoop.makePromise(of: Void.self)
            state.nextTicket += 1
            state.queue.append(Waiter(ticket: state.nextTicket, promise: promise))
            return .queued(ticket: state.nextTicket, future: promise.futureResult)
        }
    }

    /// Gives a slot back; the oldest waiter, if any, gets it.
    func release() {
        let admitted = self.state.withLockedValue { state in
            state.active -= 1
            return state.admitWaiters()
        }
        for promise in admitted { promise.succeed() }
    }

    /// Removes a waiter from the queue. Returns false when it was no longer queued: its slot has
    /// already been granted (the success may still be on its way), so the caller owns it and must release it.
    func cancel(ticket: UInt64) -> Bool {
        let removed: Waiter? = self.state.withLockedValue { state in
            guard let index = state.queue.firstIndex(where: { $0.ticket == ticket }) else { return nil }
            return state.queue.remove(at: index)
        }
        guard let removed else { return false }
        removed.promise.fail(Cancelled())
        return true
    }

    /// Changes the number of slots; a larger (or unlimited) capacity admits waiters at once, a smaller
    /// one lets running generations finish.
    func setCapacity(_ capacity: Int) {
        let admitted = self.state.withLockedValue { state in
            state.capacity = capacity
            return state.admitWaiters()
        }
        for promise in admitted { promise.succeed() }
    }
}
