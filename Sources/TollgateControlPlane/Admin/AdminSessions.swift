import Crypto
import Foundation
import NIOConcurrencyHelpers
import TollgateCore

/// The admin page's login sessions, as signed cookies that every replica can check.
///
/// A session is `<id>.<expiry>.<mac>`: 128 random bits, the Unix second it ends (12 hours after
/// login), and an HMAC-SHA256 of both under a key derived from the admin key. Any replica with
/// the same admin key accepts it, with nothing shared but that key; the admin key itself never
/// goes into a cookie or a URL.
///
/// Ending sessions:
/// - **Rotating the admin key** ends every session at once: the derived key changes, so no
///   earlier cookie verifies (on each replica once it has the new key; `reload?fleet=1`).
/// - **Logout** puts the session's digest on a revocation list until the session would have
///   ended. The list is in memory, bounded by `capacity` (a full list refuses further logouts'
///   entries by dropping the soonest-ending one), and with Redis it is shared: the fleet layer
///   announces each logout to the other replicas (`onLogout`, pub/sub) and keeps the list in
///   Redis, from which a (re)starting replica reads it (`revoke`).
/// - **Without Redis** the derivation also mixes in a random value drawn at start, so that a
///   restart ends every session as before (a revocation list that died with the process must
///   not bring logged-out cookies back).
public final class AdminSessions: Sendable {
    /// The cookie's name.
    static let cookieName = "tollgate_admin_session"
    /// How long a session lasts after login.
    let lifetime: Duration
    /// The most revoked sessions remembered (a logout loop cannot grow memory).
    public let capacity: Int
    /// `lifetime` in seconds.
    public var lifetimeSeconds: Int64 { lifetime.components.seconds }
    /// The admin key sessions are signed with.
    let key: AdminKey
    private let processSalt: [UInt8]
    private let revoked = NIOLockedValueBox<[String: Int64]>([:])
    /// Called with the session's digest (hex) and when it would have ended.
    private let logoutHook = Hook<(digest: String, expiresS: Int64)>()
    private let clock: @Sendable () -> Int64

    /// - Parameter shared: true when the replicas share sessions (with Redis): no per-process salt.
    public init(key: AdminKey, shared: Bool, lifetime: Duration = .seconds(12 * 3600), capacity: Int = 10_000,
                clockSeconds: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }) {
        self.key = key
        self.lifetime = lifetime
        self.capacity = capacity
        self.clock = clockSeconds
        if shared {
            processSalt = []
        } else {
            var generator = SystemRandomNumberGenerator()
            processSalt = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        }
    }

    /// Called on every logout with the session's digest (hex) and when it would have ended.
    public func onLogout(_ hook: @escaping @Sendable (_ digest: String, _ expiresS: Int64) -> Void) {
        logoutHook.install { session in hook(session.digest, session.expiresS) }
    }

    /// A new session; returns the cookie's value.
    func create() -> String {
        var generator = SystemRandomNumberGenerator()
        let id = (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) }.hex
        let expiry = clock() + lifetime.components.seconds
        guard let mac = mac(id: id, expiry: expiry) else { return "" }
        return "\(id).\(expiry).\(mac)"
    }

    /// Whether `value` is a session signed with the admin key in force, not expired, not revoked.
    func isValid(_ value: String?) -> Bool {
        guard let value, let (id, expiry, presented) = Self.split(value), expiry > clock(),
              let expected = mac(id: id, expiry: expiry) else { return false }
        // Compared in constant time: the MAC is the secret part.
        guard Self.constantTimeEqual(Array(expected.utf8), Array(presented.utf8)) else { return false }
        let digest = Self.digest(of: value)
        return revoked.withLockedValue { $0[digest] == nil }
    }

    /// Ends the session `value` names (logout), here and, through `onLogout`, on every replica.
    func remove(_ value: String?) {
        guard let value, let (_, expiry, _) = Self.split(value), isValid(value) else { return }
        let digest = Self.digest(of: value)
        revoke(digest: digest, expiresS: expiry)
        logoutHook.call((digest, expiry))
    }

    /// Puts a session digest (hex SHA-256 of the cookie value) on the revocation list until
    /// `expiresS`. From the fleet layer: a logout on another replica.
    public func revoke(digest: String, expiresS: Int64) {
        let now = clock()
        guard expiresS > now else { return }
        revoked.withLockedValue { list in
            if list.count >= capacity {
                list = list.filter { $0.value > now }
                if list.count >= capacity, let soonest = list.min(by: { $0.value < $1.value })?.key { list[soonest] = nil }
            }
            list[digest] = expiresS
        }
    }

    /// The revocations still in force (digest → end), for sharing them again after an outage.
    public var revocations: [String: Int64] {
        let now = clock()
        return revoked.withLockedValue { $0.filter { $0.value > now } }
    }

    /// `Set-Cookie` for a new session.
    func cookie(for value: String) -> String {
        "\(Self.cookieName)=\(value); Path=/admin; Max-Age=\(lifetime.components.seconds); HttpOnly; SameSite=Strict"
    }

    /// `Set-Cookie` that deletes the session cookie.
    static let expiredCookie = "\(cookieName)=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict"

    // MARK: -

    /// HMAC-SHA256 over "id.expiry" under SHA-256("tollgate admin session v1" ‖ admin key
    /// digest ‖ salt); nil without an admin key.
    private func mac(id: String, expiry: Int64) -> String? {
        guard let admin = key.current.digest else { return nil }
        var material = Array("tollgate admin session v1|".utf8)
        material += Array(admin.hex.utf8)
        material += processSalt
        let derived = SymmetricKey(data: SHA256.hash(data: material))
        let code = HMAC<SHA256>.authenticationCode(for: Array("\(id).\(expiry)".utf8), using: derived)
        return Array(code).hex
    }

    /// `<32 hex>.<seconds>.<64 hex>`, else nil.
    static func split(_ value: String) -> (id: String, expiry: Int64, mac: String)? {
        guard value.utf8.count <= 128 else { return nil }
        let parts = value.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].utf8.count == 32, parts[2].utf8.count == 64,
              parts[0].utf8.allSatisfy(isLowerHex), parts[2].utf8.allSatisfy(isLowerHex),
              parts[1].utf8.count <= 12, parts[1].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let expiry = Int64(parts[1]) else { return nil }
        return (String(parts[0]), expiry, String(parts[2]))
    }

    /// The digest a revocation is filed under: the cookie value's SHA-256.
    static func digest(of value: String) -> String { KeyDigest.hex(of: value) }

    private static func isLowerHex(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) }

    private static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for i in a.indices { difference |= a[i] ^ b[i] }
        return difference == 0
    }
}

extension Sequence where Element == UInt8 {
    var hex: String {
        var out = ""
        for byte in self {
            out.append(Character(Unicode.Scalar(hexDigits[Int(byte >> 4)])))
            out.append(Character(Unicode.Scalar(hexDigits[Int(byte & 15)])))
        }
        return out
    }
}

private let hexDigits = Array("0123456789abcdef".utf8)
