import NIOConcurrencyHelpers
import TollgateCore

/// The admin key in force, as its SHA-256; nil turns `/admin/api/*` and the admin page off.
///
/// Replaced on every reload (SIGHUP, `POST /admin/api/reload`), so that rotating a leaked key
/// in `auth.admin_key_file` takes effect without a restart. Each change bumps `generation`;
/// an admin session remembers the generation it was opened under and ends when it changes,
/// so the old key's 12-hour sessions end with it.
public final class AdminKey: Sendable {
    private let state: NIOLockedValueBox<(digest: KeyDigest?, generation: Int)>

    public init(_ digest: KeyDigest?) {
        state = NIOLockedValueBox((digest, 0))
    }

    /// The key's digest and its generation, read together.
    public var current: (digest: KeyDigest?, generation: Int) {
        state.withLockedValue { $0 }
    }

    public var digest: KeyDigest? { current.digest }

    /// Installs `digest`. Returns whether it differs from the key in force; if so every
    /// session opened before ends.
    @discardableResult
    public func install(_ digest: KeyDigest?) -> Bool {
        state.withLockedValue { state in
            guard state.digest != digest else { return false }
            state = (digest, state.generation + 1)
            return true
        }
    }
}
