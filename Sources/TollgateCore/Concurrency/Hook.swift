import Foundation

/// A callback installed by one part (the fleet, the lease manager, the admin sessions) and
/// called by another, from any thread.
///
/// Why not a `NIOLockedValueBox<(@Sendable (A) -> Void)?>` read with `withLockedValue { $0 }`:
/// the box's inout access writes the closure back, re-wrapped in two reabstraction thunks, so
/// every read made the next call two frames deeper, without bound (the usage observer, read per
/// batch of ledger rows, grew by about 200 frames a second at full load: CPU growing with
/// uptime, then a stack overflow). Here the closure sits in a class, installed whole and called
/// where it is stored: it is never written back, nor re-wrapped per call.
public final class Hook<Argument>: @unchecked Sendable {
    // @unchecked: `installed` is read and written under `lock` only.
    private final class Installed: Sendable {
        let call: @Sendable (Argument) -> Void
        init(_ call: @escaping @Sendable (Argument) -> Void) { self.call = call }
    }

    private let lock = NSLock()
    private var installed: Installed?

    public init() {}

    /// Installs `call` in place of the one before; nil removes it.
    public func install(_ call: (@Sendable (Argument) -> Void)?) {
        let new = call.map(Installed.init)
        lock.withLock { installed = new }
    }

    /// Calls the installed callback, outside the lock. False when none is installed.
    @discardableResult
    public func call(_ argument: Argument) -> Bool {
        guard let current = lock.withLock({ installed }) else { return false }
        current.call(argument)
        return true
    }
}
