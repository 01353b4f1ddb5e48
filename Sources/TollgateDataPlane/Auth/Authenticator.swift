import TollgateCore

/// Step 2 of a request: `Authorization: Bearer <key>` → the calling department. The key is
/// hashed first and then looked up, so the time taken does not depend on its content; keys from
/// the ledger (with expiry) are tried before the configuration's.
///
/// The control plane's admin check reads the header with the same rule (`credential`), so a
/// credential the data plane understands is understood the same way there.
public enum Authenticator {
    /// What an `Authorization` header holds.
    public enum Credential: Equatable {
        /// No header.
        case none
        /// A header that is not `Bearer <key>`.
        case malformed
        /// The key's digest (the key itself is not kept).
        case key(KeyDigest)
    }

    /// Reads `Authorization: Bearer <key>`: the scheme in any case, spaces after it skipped.
    public static func credential(_ authorization: String?) -> Credential {
        guard var value = authorization else { return .none }
        return value.withUTF8 { credential(UnsafeRawBufferPointer($0)) }
    }

    /// The same, from the header value's bytes (a request head's, hashed where they are).
    static func credential(_ value: UnsafeRawBufferPointer) -> Credential {
        guard value.count > 7, HeaderNames.matches(UnsafeRawBufferPointer(rebasing: value[..<7]), HeaderNames.bearerPrefix) else {
            return .malformed
        }
        return .key(KeyDigest(hashing: value.dropFirst(7).drop { $0 == UInt8(ascii: " ") }))
    }

    /// Whether `digest` is a department's key (in the ledger, even expired, or in the configuration).
    public static func isDepartmentKey(_ digest: KeyDigest, state: GatewayState) -> Bool {
        state.keys.lookup(digest) != nil || state.table.department(forKey: digest) != nil
    }

    static func authenticate(_ credential: Credential, state: GatewayState, nowMs: @autoclosure () -> Int64) -> Result<Caller, GatewayError> {
        let table = state.table
        switch credential {
        case .none:
            if let anonymous = table.anonymousDepartment { return .success(Caller(department: anonymous, keyPrefix: nil)) }
            return .failure(.invalidAPIKey("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."))
        case .malformed:
            return .failure(.invalidAPIKey("The Authorization header must be 'Bearer YOUR_KEY'."))
        case .key(let digest):
            if let entry = state.keys.lookup(digest) {
                if let expires = entry.expiresMs, expires <= nowMs() {
                    return .failure(.invalidAPIKey("Incorrect API key provided."))
                }
                return .success(Caller(department: entry.department, keyPrefix: entry.prefix))
            }
            if let d = table.department(forKey: digest) { return .success(Caller(department: d, keyPrefix: nil)) }
            return .failure(.invalidAPIKey("Incorrect API key provided."))
        }
    }
}
