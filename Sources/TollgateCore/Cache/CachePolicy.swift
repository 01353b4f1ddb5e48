/// Which answers a route caches.
public enum CacheMode: String, Sendable, Equatable, CaseIterable {
    /// Never looks up nor stores.
    case off
    /// Only answers that a repeat of the request would reproduce: `temperature` 0, or a `seed`.
    case deterministic
    /// Every successful answer, sampled or not (a repeated question gets the first answer).
    case always
}

/// A route's response cache settings.
public struct CachePolicy: Sendable, Equatable {
    /// Which requests are cached; `deterministic` by default.
    public var mode: CacheMode
    /// How long an entry lives; 1 hour by default.
    public var ttl: Duration
    /// Answers larger than this (the stored non-stream JSON) are not stored; 256 KiB by default.
    public var maxEntryBytes: Int
    /// Whether departments share entries; by default each department has its own namespace and
    /// never receives another's cached answer.
    public var shared: Bool

    public init(mode: CacheMode = .deterministic, ttl: Duration = .seconds(3600), maxEntryBytes: Int = 256 * 1024, shared: Bool = false) {
        self.mode = mode
        self.ttl = ttl
        self.maxEntryBytes = maxEntryBytes
        self.shared = shared
    }

    /// The key namespace for a department's request: `department:<name>`, or `shared` when the
    /// route opts into sharing. (Key parts are length-prefixed, so a department named `shared`
    /// does not collide with the shared namespace.)
    public func namespace(department: String) -> String {
        shared ? "shared" : "department:" + department
    }

    /// Whether an answer may be stored: status 200, non-empty and at most `maxEntryBytes`.
    /// (A cut-off or failed stream never reaches this: `StreamAssembler` returns nil for it.)
    public func admits(status: Int, bodyBytes: Int) -> Bool {
        status == 200 && bodyBytes > 0 && bodyBytes <= maxEntryBytes
    }

    /// What to do for one request.
    /// - Parameters:
    ///   - temperature: the request's `temperature`; absent counts as sampled, OpenAI's
    ///     default being 1.
    ///   - hasSeed: the request gave a non-null `seed`.
    ///   - directives: the request's `Cache-Control`.
    public static func decide(policy: CachePolicy, temperature: Double?, hasSeed: Bool, directives: CacheDirectives) -> CacheDecision {
        let because: String
        switch policy.mode {
        case .off:
            return CacheDecision(lookup: false, store: false, reason: "cache off")
        case .always:
            because = "mode always"
        case .deterministic:
            if temperature == 0 {
                because = "temperature 0"
            } else if hasSeed {
                because = "seed"
            } else {
                return CacheDecision(lookup: false, store: false, reason: "not deterministic")
            }
        }
        var reason = because
        if directives.noCache { reason += ", no-cache" }
        if directives.noStore { reason += ", no-store" }
        return CacheDecision(lookup: !directives.noCache, store: !directives.noStore, reason: reason)
    }

    /// `CachePolicy.decide(policy: self, ...)`.
    public func decide(temperature: Double?, hasSeed: Bool, directives: CacheDirectives) -> CacheDecision {
        CachePolicy.decide(policy: self, temperature: temperature, hasSeed: hasSeed, directives: directives)
    }
}

/// The request's `Cache-Control` directives that the gateway honours.
///
/// `no-cache` skips the lookup (the answer is fetched, and still stored); `no-store` skips the
/// store (a cached answer may still be served). Other directives (`max-age`, …) are ignored.
public struct CacheDirectives: Sendable, Equatable {
    public var noCache: Bool
    public var noStore: Bool

    public init(noCache: Bool = false, noStore: Bool = false) {
        self.noCache = noCache
        self.noStore = noStore
    }

    /// Parses a `Cache-Control` value: comma-separated directives, case-insensitive, spaces and
    /// tabs tolerated, arguments (`no-cache="x"`) ignored. For several header lines, join their
    /// values with `,`. A nil value gives no directives.
    public init(cacheControl: String?) {
        self.init()
        guard let value = cacheControl else { return }
        for part in value.split(separator: ",", omittingEmptySubsequences: true) {
            var name = part.prefix { $0 != "=" }
            while let c = name.first, c == " " || c == "\t" { name = name.dropFirst() }
            while let c = name.last, c == " " || c == "\t" { name = name.dropLast() }
            switch name.lowercased() {
            case "no-cache": noCache = true
            case "no-store": noStore = true
            default: break
            }
        }
    }
}

/// The cache's decision for one request.
public struct CacheDecision: Sendable, Equatable {
    /// Look the key up and answer from the cache on a hit.
    public var lookup: Bool
    /// Store the answer on a miss (when `CachePolicy.admits` it).
    public var store: Bool
    /// Why, for logs: `cache off`, `not deterministic`,
    /// `temperature 0`, `seed`, `mode always`, followed by `, no-cache` / `, no-store`.
    public var reason: String

    public init(lookup: Bool, store: Bool, reason: String) {
        self.lookup = lookup
        self.store = store
        self.reason = reason
    }
}
