import NIOHTTP1
import TollgateCore

/// Step 2 of a request: `Authorization: Bearer <key>` → the calling department. The key is
/// hashed first and then looked up, so the time taken does not depend on its content; keys from
/// the ledger (with expiry) are tried before the configuration's.
enum Authenticator {
    static func authenticate(_ headers: HTTPHeaders, state: GatewayState, nowMs: @autoclosure () -> Int64) -> Result<Caller, GatewayError> {
        let table = state.table
        guard let value = headers.first(name: "authorization") else {
            if let anonymous = table.anonymousDepartment { return .success(Caller(department: anonymous, keyPrefix: nil)) }
            return .failure(.invalidAPIKey("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."))
        }
        let utf8 = value.utf8
        guard utf8.count > 7, HeaderNames.matches(String(value.prefix(7)), HeaderNames.bearerPrefix) else {
            return .failure(.invalidAPIKey("The Authorization header must be 'Bearer YOUR_KEY'."))
        }
        let key = utf8.dropFirst(7).drop { $0 == UInt8(ascii: " ") }
        let digest = KeyDigest(hashing: key)
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
