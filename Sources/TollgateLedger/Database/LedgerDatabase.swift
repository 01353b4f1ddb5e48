import Foundation
import GRDB

/// The usage ledger: one SQLite file per gateway replica, through a GRDB `DatabasePool`.
///
/// WAL mode (readers never wait for the writer), `synchronous = NORMAL` (a process crash
/// loses nothing committed; a power loss may lose the last transactions before the WAL was
/// synced), and a busy timeout so that `tollgate keys` and the gateway can share the file.
/// Every SQLite call blocks: never call this from an event loop.
public final class LedgerDatabase: Sendable {
    /// The file this ledger lives in.
    public let path: String
    public let isReadOnly: Bool
    let pool: DatabasePool

    /// How long a writer waits for another process's write lock before failing.
    static let busyTimeout: TimeInterval = 5

    private init(path: String, pool: DatabasePool, readOnly: Bool) {
        self.path = path
        self.pool = pool
        self.isReadOnly = readOnly
    }

    /// Opens (creating if needed, with mode 0600) the ledger at `path` and applies the pending migrations,
    /// each in its own transaction. With `readOnly`, nothing is created or applied, but the
    /// applied migrations are still checked against `migrations`.
    ///
    /// Throws a `LedgerError` naming the file when an applied migration was edited, when
    /// the database was migrated by a newer Tollgate, when `migrations` has malformed names
    /// or shared numbers, or when a migration fails.
    public static func open(path: String, migrations: [Migration], readOnly: Bool = false) throws -> LedgerDatabase {
        let known = try Migration.validated(migrations)
        if readOnly {
            guard FileManager.default.fileExists(atPath: path) else { throw LedgerError.databaseMissing(path) }
        } else {
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty {
                try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            }
            // The ledger holds prompt previews: a new file is the owner's only (0600), whatever
            // the umask. SQLite gives its -wal and -shm files the database file's mode.
            if !FileManager.default.fileExists(atPath: path) {
                FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600])
            }
        }

        var configuration = Configuration()
        configuration.readonly = readOnly
        configuration.busyMode = .timeout(busyTimeout)
        configuration.label = "tollgate-ledger"
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        let pool: DatabasePool
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw LedgerError.cannotOpen(path, error)
        }
        do {
            if readOnly {
                try Migrator.verify(pool, known: known, path: path)
            } else {
                try Migrator.migrate(pool, known: known, path: path)
            }
        } catch let error as LedgerError {
            try? pool.close()
            throw error
        } catch {
            try? pool.close()
            throw LedgerError.cannotOpen(path, error)
        }
        return LedgerDatabase(path: path, pool: pool, readOnly: readOnly)
    }

    /// Names of the applied migrations (`0001_usage.sql`, …), in order.
    public func appliedMigrations() throws -> [String] {
        try pool.read { db in
            try Migrator.readApplied(db).map(\.name).sorted()
        }
    }

    /// Closes the connections. Call it after the `UsageWriter` over it is closed; further
    /// use of this ledger throws.
    public func close() throws {
        try pool.close()
    }
}
