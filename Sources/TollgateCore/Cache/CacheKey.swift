import Crypto

/// The response cache's key: SHA-256 over the namespace, the endpoint, the model and the
/// canonical request body (`CanonicalJSON`).
///
/// Each part is prefixed with its length (8 bytes, big-endian), after a version tag, so no two
/// different tuples hash the same input (`("ab", "c")` and `("a", "bc")` differ), and a change
/// of format changes every key.
public struct CacheKey: Sendable, Hashable, CustomStringConvertible {
    /// 64 lower-case hex digits.
    public let hex: String

    private static let version = Array("tollgate-cache-key-v1".utf8)

    /// The key of one request.
    /// - Parameters:
    ///   - namespace: who may share the answer; `CachePolicy.namespace(department:)` gives the
    ///     department's own namespace, or the shared one when the route opts in.
    ///   - endpoint: the API path, e.g. `/v1/chat/completions`, so that a chat answer is never
    ///     given to a completions or embeddings request.
    ///   - model: the model as routed.
    ///   - canonicalBody: `CanonicalJSON.canonicalize(body)`.
    public static func make(namespace: String, endpoint: String, model: String, canonicalBody: [UInt8]) -> CacheKey {
        var hasher = SHA256()
        for part in [version, Array(namespace.utf8), Array(endpoint.utf8), Array(model.utf8)] {
            feed(part, into: &hasher)
        }
        feed(canonicalBody, into: &hasher)
        let digest = hasher.finalize()
        let digits = Array("0123456789abcdef".utf8)
        var hex: [UInt8] = []
        hex.reserveCapacity(64)
        for byte in digest {
            hex.append(digits[Int(byte >> 4)])
            hex.append(digits[Int(byte & 0xF)])
        }
        return CacheKey(hex: String(decoding: hex, as: UTF8.self))
    }

    private init(hex: String) { self.hex = hex }

    private static func feed(_ part: [UInt8], into hasher: inout SHA256) {
        var length = UInt64(part.count).bigEndian
        let prefix = withUnsafeBytes(of: &length) { Array($0) }
        hasher.update(data: prefix)
        hasher.update(data: part)
    }

    /// The Redis key holding the entry.
    public var redisKey: String { "tollgate:cache:" + hex }

    public var description: String { hex }
}
