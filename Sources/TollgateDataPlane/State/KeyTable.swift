import TollgateCore

/// API keys from the ledger (`tollgate keys create`), resolved against one routing table.
/// Keys of departments the configuration does not name are left out (and logged by whoever
/// builds the table).
public final class KeyTable: Sendable {
    public struct Entry: Sendable, Equatable {
        public let department: Int
        public let prefix: String
        public let expiresMs: Int64?
    }

    private let entries: [KeyDigest: Entry]
    public var count: Int { entries.count }
    /// Departments of keys that no configured department matches.
    public let unknownDepartments: Set<String>

    public static let empty = KeyTable(table: nil, keys: [])

    public init(table: RoutingTable?, keys: [ActiveKey]) {
        var entries: [KeyDigest: Entry] = [:]
        var unknown = Set<String>()
        if let table {
            for key in keys {
                guard let digest = KeyDigest(hex: key.sha256) else { continue }
                guard let department = table.department(named: key.department) else {
                    unknown.insert(key.department)
                    continue
                }
                entries[digest] = Entry(department: department, prefix: key.prefix, expiresMs: key.expiresMs)
            }
        }
        self.entries = entries
        self.unknownDepartments = unknown
    }

    @inline(__always)
    public func lookup(_ digest: KeyDigest) -> Entry? { entries[digest] }
}
