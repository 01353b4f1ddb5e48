import Foundation
import NIOConcurrencyHelpers
import TollgateCore

/// The admin page's login sessions, in memory only (a restart logs everyone out).
///
/// A session id is 256 random bits, given to the browser once in an HttpOnly,
/// SameSite=Strict cookie; only its SHA-256 is kept here, with an expiry. The admin key
/// itself never goes into a cookie or a URL.
final class AdminSessions: Sendable {
    /// The cookie's name.
    static let cookieName = "tollgate_admin_session"
    /// How long a session lasts after login.
    let lifetime: Duration
    /// More sessions than this and the oldest are dropped (a login loop cannot grow memory).
    let capacity: Int
    private let sessions = NIOLockedValueBox<[KeyDigest: ContinuousClock.Instant]>([:])

    init(lifetime: Duration = .seconds(12 * 3600), capacity: Int = 1_000) {
        self.lifetime = lifetime
        self.capacity = capacity
    }

    /// A new session; returns the id for the cookie.
    func create(now: ContinuousClock.Instant = .now) -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        let id = bytes.map { String(format: "%02x", $0) }.joined()
        let expiry = now + lifetime
        sessions.withLockedValue { all in
            all = all.filter { $0.value > now }
            if all.count >= capacity, let oldest = all.min(by: { $0.value < $1.value })?.key { all[oldest] = nil }
            all[KeyDigest(hashing: Array(id.utf8))] = expiry
        }
        return id
    }

    /// Whether `id` names a live session.
    func isValid(_ id: String?, now: ContinuousClock.Instant = .now) -> Bool {
        guard let id, id.utf8.count == 64 else { return false }
        let digest = KeyDigest(hashing: Array(id.utf8))
        return sessions.withLockedValue { all in
            guard let expiry = all[digest] else { return false }
            if expiry <= now {
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
