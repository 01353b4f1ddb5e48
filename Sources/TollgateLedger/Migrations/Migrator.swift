import Foundation
import GRDB

/// Applies migrations to a database and refuses the states it cannot reason about.
enum Migrator {
    static let tableSQL = """
        CREATE TABLE IF NOT EXISTS tollgate_migrations (
            name       TEXT PRIMARY KEY,
            checksum   TEXT NOT NULL,
            applied_at TEXT NOT NULL
        ) STRICT
        """

    struct Applied: Sendable, Equatable {
        var name: String
        var checksum: String
    }

    /// The migrations still to apply, in order; throws when an applied file changed, when
    /// the database knows migrations the code does not (it is newer), or when a missing
    /// migration sorts before an applied one. Pure: tested without a database.
    static func plan(applied: [Applied], known: [Migration], path: String) throws -> [Migration] {
        let byName = Dictionary(known.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let unknown = applied.map(\.name).filter { byName[$0] == nil }.sorted()
        if !unknown.isEmpty { throw LedgerError.databaseNewerThanCode(unknown, path: path) }
        for row in applied {
            let migration = byName[row.name]!
            if migration.checksum != row.checksum {
                throw LedgerError.migrationChanged(row.name, applied: row.checksum, current: migration.checksum)
            }
        }
        let appliedNames = Set(applied.map(\.name))
        let pending = known.filter { !appliedNames.contains($0.name) }
        if let latest = known.last(where: { appliedNames.contains($0.name) }),
           let early = pending.first(where: { $0.number < latest.number }) {
            throw LedgerError.migrationOutOfOrder(early.name, after: latest.name)
        }
        return pending
    }

    static func readApplied(_ db: Database) throws -> [Applied] {
        try Row.fetchAll(db, sql: "SELECT name, checksum FROM tollgate_migrations ORDER BY name").map {
            Applied(name: $0["name"], checksum: $0["checksum"])
        }
    }

    /// Creates the bookkeeping table and applies what is pending, each migration in its own
    /// immediate transaction. Another process migrating the same file at the same time is
    /// harmless: a migration found applied inside its transaction is skipped.
    static func migrate(_ pool: DatabasePool, known: [Migration], path: String) throws {
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: tableSQL)
            let pending = try plan(applied: try readApplied(db), known: known, path: path)
            for migration in pending {
                do {
                    try db.inTransaction(.immediate) {
                        let done = try Bool.fetchOne(
                            db, sql: "SELECT 1 FROM tollgate_migrations WHERE name = ?", arguments: [migration.name]) ?? false
                        if !done {
                            try db.execute(sql: migration.sql)
                            try db.execute(
                                sql: "INSERT INTO tollgate_migrations (name, checksum, applied_at) VALUES (?, ?, ?)",
                                arguments: [migration.name, migration.checksum, timestamp()])
                        }
                        return .commit
                    }
                } catch let error as LedgerError {
                    throw error
                } catch {
                    throw LedgerError.migrationFailed(migration.name, error)
                }
            }
            // A concurrent migrator may have applied some; check the final state once more.
            _ = try plan(applied: try readApplied(db), known: known, path: path)
        }
    }

    /// Read-only: verifies checksums and refuses a newer database, applies nothing.
    static func verify(_ pool: DatabasePool, known: [Migration], path: String) throws {
        try pool.read { db in
            guard try db.tableExists("tollgate_migrations") else { throw LedgerError.notALedger(path) }
            _ = try plan(applied: try readApplied(db), known: known, path: path)
        }
    }

    private static func timestamp() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date())
    }
}
