import Foundation
import TollgateCore

/// What the ledger knows about an API key (never the key itself). Times are Unix ms.
public struct APIKeyInfo: Sendable, Equatable, Codable {
    /// First 11 characters of the key, e.g. `tg-AbCd1234`: shown in lists and logs.
    public var prefix: String
    public var department: String
    public var label: String?
    public var createdMs: Int64
    public var lastUsedMs: Int64?
    /// Nil: never expires.
    public var expiresMs: Int64?
    /// Nil: not revoked.
    public var revokedMs: Int64?

    public init(prefix: String, department: String, label: String?, createdMs: Int64,
                lastUsedMs: Int64?, expiresMs: Int64?, revokedMs: Int64?) {
        self.prefix = prefix
        self.department = department
        self.label = label
        self.createdMs = createdMs
        self.lastUsedMs = lastUsedMs
        self.expiresMs = expiresMs
        self.revokedMs = revokedMs
    }

    public enum State: String, Sendable, Codable {
        case active, expired, revoked
    }

    /// Whether the key works at `nowMs`; a key expires at its `expiresMs` exactly.
    public func state(atMs nowMs: Int64) -> State {
        if revokedMs != nil { return .revoked }
        if let expiresMs, expiresMs <= nowMs { return .expired }
        return .active
    }
}

/// A key just created: `key` is shown once and stored nowhere.
public struct CreatedKey: Sendable {
    public let key: String
    public let info: APIKeyInfo
}

extension Date {
    /// Unix time in whole milliseconds.
    var unixMs: Int64 { Int64((timeIntervalSince1970 * 1000).rounded(.down)) }
}

extension Duration {
    /// Whole milliseconds, rounded down; saturated at `Int64.min`/`Int64.max` (a `Duration`
    /// holds far more seconds than fit in milliseconds).
    var wholeMilliseconds: Int64 {
        let (ms, overflow) = components.seconds.multipliedReportingOverflow(by: 1000)
        if overflow { return components.seconds < 0 ? .min : .max }
        let (sum, overflow2) = ms.addingReportingOverflow(components.attoseconds / 1_000_000_000_000_000)
        if overflow2 { return ms < 0 ? .min : .max }
        return sum
    }
}
