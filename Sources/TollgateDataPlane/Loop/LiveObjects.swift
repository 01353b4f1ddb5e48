#if DEBUG
import Atomics

/// How many of the objects a connection and a request make are alive, in debug builds only
/// (the tests' check that no reference cycle keeps them: the exchange and its timers, the
/// exchange and its upstream connection hold each other strongly while a request runs, and
/// must let go when it ends). Release builds do not count.
enum LiveObjects {
    static let exchanges = ManagedAtomic<Int>(0)
    static let handlers = ManagedAtomic<Int>(0)
}
#endif
