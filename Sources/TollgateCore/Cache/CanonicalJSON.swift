/// The canonical form of a request body, from which the response cache's key is computed.
///
/// Two bodies that are the same JSON give the same bytes, whatever their key order, whitespace
/// or string escaping:
/// - object members sorted by the UTF-8 bytes of their names, at every level; of duplicate
///   names only the last is kept (what Python's `json`, and so most inference servers, keep);
/// - no whitespace;
/// - strings decoded (`\u00e9`, surrogate pairs `\ud83d\ude00`, `\/`) and re-encoded one way:
///   `"` and `\` escaped, control characters as `\u00xx` in lower-case hex, everything else,
///   non-ASCII included, as raw UTF-8;
/// - numbers compared by exact decimal value: `1`, `1.0`, `1e0`, `10E-1` are all written `1`,
///   `0.50` is `0.5`, `-0` is `0`, `1E-9` is `1e-9`. Servers parse `0` and `0.0` (or
///   `max_tokens` `16` and `16.0`) to the same request, so they share an answer. The
///   normalization works on the digits, never through `Double`, so `0.1` and
///   `0.10000000000000001` stay different (a missed hit at worst, never a wrong one).
///   `true` and `1` stay different: they are different JSON types;
/// - the members named in `dropping` removed from the top-level object only (a tool's
///   parameter named `user` is part of the key).
public enum CanonicalJSON {
    /// The request members that cannot change an answer: how it is delivered and who asked.
    public static let defaultDropped: Set<String> = ["stream", "stream_options", "user"]

    /// Canonicalizes a JSON document (see the type's documentation).
    ///
    /// Throws `CacheFormatError` when `body` is not valid JSON (RFC 8259, UTF-8), has an unpaired
    /// surrogate escape, nests deeper than 256 levels, or writes a number with an exponent over
    /// 10⁹ in magnitude; such a request is simply not cached.
    public static func canonicalize(
        _ body: [UInt8],
        dropping: Set<String> = CanonicalJSON.defaultDropped
    ) throws(CacheFormatError) -> [UInt8] {
        var value = try CacheJSONValue.parse(body)
        if case .object(let members) = value, !dropping.isEmpty {
            let dropped = Set(dropping.map { Array($0.utf8) })
            value = .object(members.filter { !dropped.contains(Array($0.key.utf8)) })
        }
        var out: [UInt8] = []
        out.reserveCapacity(body.count)
        value.write(into: &out, canonical: true)
        return out
    }
}
