import Foundation
import GRDB
import TollgateCore

/// API keys in the ledger's `api_keys` table, for `tollgate keys` and the gateway.
///
/// A key is `tg-` followed by 43 base62 characters from 32 bytes of
/// `SystemRandomNumberGenerator` (256 bits). Only its lower-case hex SHA-256 and its first
/// 11 characters (the prefix, for lists and logs) are stored; the key is shown once.
/// Times are Unix milliseconds. Every call blocks on SQLite: not from an event loop.
public final class KeyStore: Sendable {
    private let database: LedgerDatabase

    public init(database: LedgerDatabase) {
        self.database = database
    }

    /// Creates a key for `department`, valid for `expiresIn` (nil: until revoked).
    public func create(department: String, label: String?, expiresIn: Duration?, now: Date = Date()) throws -> CreatedKey {
        let department = department.trimmingCharacters(in: .whitespaces)
        guard !department.isEmpty else { throw LedgerError.invalidDepartment(department) }
        if let expiresIn, expiresIn <= .zero { throw LedgerError.invalidDuration("\(expiresIn)") }
        if let expiresIn, expiresIn > Self.maxLifetime { throw LedgerError.durationTooLong("\(expiresIn)", maxDays: Self.maxLifetimeDays) }
        let label = label.flatMap { $0.isEmpty ? nil : $0 }
        if let label, label.count > Self.maxLabelLength { throw LedgerError.labelTooLong(maxCharacters: Self.maxLabelLength) }
        let createdMs = now.unixMs
        // Bounded above, so the sum cannot overflow for any real clock; checked all the same.
        let expiresMs = try expiresIn.map { lifetime -> Int64 in
            let (sum, overflow) = createdMs.addingReportingOverflow(lifetime.wholeMilliseconds)
            guard !overflow else { throw LedgerError.durationTooLong("\(lifetime)", maxDays: Self.maxLifetimeDays) }
            return sum
        }
        var attempt = 0
        while true {
            let key = KeyGenerator.makeKey()
            let info = APIKeyInfo(prefix: KeyGenerator.prefix(of: key), department: department, label: label,
                                  createdMs: createdMs, lastUsedMs: nil, expiresMs: expiresMs, revokedMs: nil)
            do {
                try database.pool.write { db in
                    try db.execute(
                        sql: """
                            INSERT INTO api_keys (prefix, sha256, department, label, created_ms, expires_ms)
                            VALUES (?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [info.prefix, KeyDigest.hex(of: key), department, label, createdMs, expiresMs])
                }
                return CreatedKey(key: key, info: info)
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE && attempt < 5 {
                attempt += 1  // a prefix collision (1 in 62^8 per pair of keys): draw again
            }
        }
    }

    /// Every key, or one department's, ordered by department and creation time.
    public func list(department: String? = nil) throws -> [APIKeyInfo] {
        try database.pool.read { db in
            let sql = "SELECT \(Self.columns) FROM api_keys"
                + (department == nil ? "" : " WHERE department = ?")
                + " ORDER BY department, created_ms, prefix"
            let arguments: StatementArguments = department.map { [$0] } ?? []
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map(Self.info(from:))
        }
    }

    /// The key with this prefix, or nil.
    public func find(prefix: String) throws -> APIKeyInfo? {
        try database.pool.read { db in
            try Row.fetchOne(db, sql: "SELECT \(Self.columns) FROM api_keys WHERE prefix = ?", arguments: [prefix])
                .map(Self.info(from:))
        }
    }

    /// Revokes the key with this prefix; throws when there is none or it is already revoked.
    @discardableResult
    public func revoke(prefix: String, now: Date = Date()) throws -> APIKeyInfo {
        try database.pool.write { db in
            guard let row = try Row.fetchOne(
                db, sql: "SELECT \(Self.columns) FROM api_keys WHERE prefix = ?", arguments: [prefix])
            else { throw LedgerError.keyNotFound(prefix) }
            var info = Self.info(from: row)
            if let revokedMs = info.revokedMs { throw LedgerError.keyAlreadyRevoked(prefix, atMs: revokedMs) }
            info.revokedMs = now.unixMs
            try db.execute(sql: "UPDATE api_keys SET revoked_ms = ? WHERE prefix = ?", arguments: [info.revokedMs, prefix])
            return info
        }
    }

    /// The keys the gateway accepts at `now`: not revoked, not expired.
    public func activeKeys(now: Date = Date()) throws -> [ActiveKey] {
        try database.pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT sha256, department, prefix, expires_ms FROM api_keys
                    WHERE revoked_ms IS NULL AND (expires_ms IS NULL OR expires_ms > ?)
                    ORDER BY prefix
                    """,
                arguments: [now.unixMs]
            ).map { ActiveKey(sha256: $0[0], department: $0[1], prefix: $0[2], expiresMs: $0[3]) }
        }
    }

    /// Every key as the replicas share it (digest, never the key), revoked ones included.
    public func registry() throws -> [FleetKeyRecord] {
        try database.pool.read { db in
            try Row.fetchAll(db, sql: "SELECT sha256, prefix, department, label, created_ms, expires_ms, revoked_ms FROM api_keys ORDER BY prefix")
                .map { FleetKeyRecord(sha256: $0[0], prefix: $0[1], department: $0[2], label: $0[3], createdMs: $0[4],
                                      expiresMs: $0[5], revokedMs: $0[6]) }
        }
    }

    /// Brings keys made or revoked on other replicas into this ledger, in one transaction:
    /// inserts the new ones (a prefix or digest already present is left as it is) and revokes
    /// the revoked ones (an earlier revocation stays). Returns whether anything changed.
    @discardableResult
    public func merge(insert: [FleetKeyRecord], revoke: [(prefix: String, revokedMs: Int64)]) throws -> Bool {
        guard !insert.isEmpty || !revoke.isEmpty else { return false }
        return try database.pool.write { db in
            var changed = false
            for r in insert {
                try db.execute(
                    sql: "INSERT OR IGNORE INTO api_keys (prefix, sha256, department, label, created_ms, expires_ms, revoked_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    arguments: [r.prefix, r.sha256, r.department, r.label, r.createdMs, r.expiresMs, r.revokedMs])
                changed = changed || db.changesCount > 0
            }
            for (prefix, revokedMs) in revoke {
                try db.execute(sql: "UPDATE api_keys SET revoked_ms = ? WHERE prefix = ? AND revoked_ms IS NULL",
                               arguments: [revokedMs, prefix])
                changed = changed || db.changesCount > 0
            }
            return changed
        }
    }

    /// Records when keys were last used (prefix → Unix ms), in one transaction. A time
    /// older than the one stored is ignored; unknown prefixes are ignored.
    public func recordLastUsed(_ uses: [String: Int64]) throws {
        guard !uses.isEmpty else { return }
        try database.pool.write { db in
            let statement = try db.cachedStatement(
                sql: "UPDATE api_keys SET last_used_ms = max(coalesce(last_used_ms, 0), ?) WHERE prefix = ?")
            for (prefix, timeMs) in uses {
                try statement.execute(arguments: [timeMs, prefix])
            }
        }
    }

    /// The longest label a key may carry (it comes from the admin API and is shown in lists).
    public static let maxLabelLength = 200

    /// The longest lifetime a key may be given, in days (ten years). The value comes from the
    /// command line or the admin API; bounding it keeps `created + lifetime` far from
    /// `Int64.max` milliseconds (`"106751991167d"` used to trap there). A key that should
    /// never expire is created without a lifetime.
    public static let maxLifetimeDays = 3_660
    static let maxLifetime = Duration.seconds(Int64(maxLifetimeDays) * 86_400)

    /// Parses `--expires`: a positive whole number and a unit — `s`, `m`, `h`, `d` or `w`
    /// (`90d`, `12h`, `30m`; `DurationText`'s key lifetimes) — of at most `maxLifetimeDays` days.
    public static func parseDuration(_ text: String) throws -> Duration {
        let (number, unit) = DurationText.split(text, units: DurationText.lifetimeUnits)
        guard let unit, let value = Int64(number), value > 0,
              number.allSatisfy(\.isASCII) else { throw LedgerError.invalidDuration(text) }
        let (total, overflow) = value.multipliedReportingOverflow(by: unit.nanoseconds / 1_000_000)
        guard !overflow, total <= maxLifetime.wholeMilliseconds else { throw LedgerError.durationTooLong(text, maxDays: maxLifetimeDays) }
        return .milliseconds(total)
    }

    private static let columns = "prefix, department, label, created_ms, last_used_ms, expires_ms, revoked_ms"

    private static func info(from row: Row) -> APIKeyInfo {
        APIKeyInfo(prefix: row[0], department: row[1], label: row[2], createdMs: row[3],
                   lastUsedMs: row[4], expiresMs: row[5], revokedMs: row[6])
    }
}
