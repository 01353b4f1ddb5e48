import Foundation

/// One API key as the replicas share it in Redis (hash `FleetKeyRecord.registryKey`, field =
/// prefix): everything the ledger's `api_keys` row holds except the key itself, which is never
/// stored anywhere. Times are Unix ms.
public struct FleetKeyRecord: Sendable, Equatable, Codable {
    public var sha256: String
    public var prefix: String
    public var department: String
    public var label: String?
    public var createdMs: Int64
    public var expiresMs: Int64?
    public var revokedMs: Int64?

    /// The Redis hash of every replica's keys.
    public static let registryKey = "tollgate:keys"
    /// At most this many keys are read from Redis (a registry grown past it is logged, and
    /// the rest ignored): the bound on what one sync may cost.
    public static let maxRecords = 100_000
    static let maxValueBytes = 2_048
    /// Latest time accepted: the end of year 9999.
    static let maxTimeMs: Int64 = 253_402_300_799_999

    public init(sha256: String, prefix: String, department: String, label: String?, createdMs: Int64,
                expiresMs: Int64?, revokedMs: Int64?) {
        self.sha256 = sha256
        self.prefix = prefix
        self.department = department
        self.label = label
        self.createdMs = createdMs
        self.expiresMs = expiresMs
        self.revokedMs = revokedMs
    }

    /// The value stored in the registry hash (compact JSON).
    public var encoded: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(self)) ?? Data())
    }

    /// Reads a registry value written by a replica; nil for anything out of range (Redis is
    /// outside the gateway). `field` is the hash field, which must be the record's prefix.
    public static func parse(field: [UInt8], value: [UInt8]) -> FleetKeyRecord? {
        guard value.count <= maxValueBytes,
              let record = try? JSONDecoder().decode(FleetKeyRecord.self, from: Data(value)),
              Array(record.prefix.utf8) == field, record.isValid else { return nil }
        return record
    }

    var isValid: Bool {
        guard sha256.utf8.count == 64, KeyDigest(hex: sha256) != nil else { return false }
        guard !prefix.isEmpty, prefix.utf8.count <= 32, !department.isEmpty, department.utf8.count <= 256 else { return false }
        if let label, label.count > 200 { return false }
        let range: ClosedRange<Int64> = 0...Self.maxTimeMs
        guard range.contains(createdMs) else { return false }
        if let expiresMs, !range.contains(expiresMs) { return false }
        if let revokedMs, !range.contains(revokedMs) { return false }
        return true
    }
}

/// How a replica's own key list and the registry in Redis are brought together. Pure: the
/// caller reads both sides and applies the plan.
///
/// A key is identified by its prefix; a record whose digest differs from the local one under
/// the same prefix is a conflict and left alone (both sides keep theirs; logged). Revocation
/// only ever spreads: a key revoked on either side ends revoked on both.
public struct KeyRegistryPlan: Sendable, Equatable {
    /// Registry keys this replica does not have yet: insert into the ledger.
    public var insertLocally: [FleetKeyRecord] = []
    /// Keys revoked in the registry but not here: revoke in the ledger (prefix, time).
    public var revokeLocally: [(prefix: String, revokedMs: Int64)] = []
    /// Keys this replica has that the registry lacks or holds unrevoked while revoked here.
    public var publish: [FleetKeyRecord] = []
    /// Prefixes whose digests disagree.
    public var conflicts: [String] = []

    public init(local: [FleetKeyRecord], remote: [FleetKeyRecord]) {
        var remoteByPrefix: [String: FleetKeyRecord] = [:]
        for record in remote { remoteByPrefix[record.prefix] = record }
        var localPrefixes = Set<String>()
        for mine in local {
            localPrefixes.insert(mine.prefix)
            guard let theirs = remoteByPrefix[mine.prefix] else {
                publish.append(mine)
                continue
            }
            guard theirs.sha256 == mine.sha256 else {
                conflicts.append(mine.prefix)
                continue
            }
            switch (mine.revokedMs, theirs.revokedMs) {
            case (nil, let revoked?): revokeLocally.append((mine.prefix, revoked))
            case (_?, nil): publish.append(mine)
            default: break
            }
        }
        for record in remote where !localPrefixes.contains(record.prefix) {
            insertLocally.append(record)
        }
    }

    public var isEmpty: Bool { insertLocally.isEmpty && revokeLocally.isEmpty && publish.isEmpty }

    public static func == (a: KeyRegistryPlan, b: KeyRegistryPlan) -> Bool {
        a.insertLocally == b.insertLocally && a.publish == b.publish && a.conflicts == b.conflicts
            && a.revokeLocally.map(\.prefix) == b.revokeLocally.map(\.prefix)
            && a.revokeLocally.map(\.revokedMs) == b.revokeLocally.map(\.revokedMs)
    }
}
