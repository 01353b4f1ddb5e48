import Foundation
import NIOConcurrencyHelpers
import TollgateCore

/// The admin page's login sessions, in memory only (a restart logs everyone out).
///
/// A session id is 256 random bits, given to the browser once in an HttpOnly,
/// SameSite=Strict cookie; only its SHA-256 is kept here, with an expiry. The admin key
/// itself never goes into a cookie or a URL. A session belongs to the admin key it was
/// opened with: when a reload installs another key (`AdminKey.generation`), it ends.
final class AdminSessions: Sendable {
    /// The cookie's name.
    static let cookieName = "tollgate_admin_session"
    /// How long a session lasts after login.
    let lifetime: Duration
    /// More sessions than this and the oldest are dropped (a login loop cannot grow memory).
    let capacity: Int
    /// The admin key sessions are opened with.
    let key: AdminKey
    private let sessions = NIOLockedValueBox<[KeyDigest: Session]>([:])

    private struct Session {
        var expiry: ContinuousClock.Instant
        /// `AdminKey.generation` at login.
        var keyGeneration: Int
    }

    init(key: AdminKey, lifetime: Duration = .seconds(12 * 3600), capacity: Int = 1_000) {
        self.key = key
        self.lifetime = lifetime
        self.capacity = capacity
    }

    /// A new session; returns the id for the cookie.
    func create(now: ContinuousClock.Instant = .now) -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        let id = bytes.map { String(format: "%02x", $0) }.joined()
        let session = Session(expiry: now + lifetime, keyGeneration: key.current.generation)
        sessions.withLockedValue { all in
            all = all.filter { $0.value.expiry > now && $0.value.keyGeneration == session.keyGeneration }
            if all.count >= capacity, let oldest = all.min(by: { $0.value.expiry < $1.value.expiry })?.key { all[oldest] = nil }
            all[KeyDigest(hashing: Array(id.utf8))] = session
        }
        return id
    }

    /// Whether `id` names a live session, opened with the admin key in force.
    func isValid(_ id: String?, now: ContinuousClock.Instant = .now) -> Bool {
        guard let id, id.utf8.count == 64 else { return false }
        let digest = KeyDigest(hashing: Array(id.utf8))
        let current = key.current
        guard current.digest != nil else { return false }
        return sessions.withLockedValue { all in
            guard let session = all[digest] else { return false }
            if session.expiry <= now || session.keyGeneration != current.generation {
                all[digest] = nil
                return false
            }
            return true
        }
    }

    /// Ends a session (logout).
    func remove(_ id: String?) {
        guard let id else { return }
        let digest = KeyDigest(hashing: Array(id.utf8))
        _ = sessions.withLockedValue { $0.removeValue(forKey: digest) }
    }

    /// `Set-Cookie` for a new session.
    func cookie(for id: String) -> String {
        "\(Self.cookieName)=\(id); Path=/admin; Max-Age=\(lifetime.components.seconds); HttpOnly; SameSite=Strict"
    }

    /// `Set-Cookie` that deletes the session cookie.
    static let expiredCookie = "\(cookieName)=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict"
}
