import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import TollgateDataPlane
import TollgateLedger

/// Where the usage ledger lives and how it is written.
public struct LedgerSettings: Sendable {
    /// The SQLite file (created with its migrations when missing).
    public var databasePath: String
    /// The `migrations/` directory with the numbered SQL files.
    public var migrationsDirectory: String
    /// Written into every row, so that merged reports can tell gateway replicas apart.
    public var replica: String?
    /// How often the key table is re-read from the database (keys created or revoked by
    /// another process, e.g. `tollgate keys revoke`).
    public var keyRefreshInterval: Duration = .milliseconds(500)

    public init(databasePath: String, migrationsDirectory: String, replica: String? = nil) {
        self.databasePath = databasePath
        self.migrationsDirectory = migrationsDirectory
        self.replica = replica
    }
}

/// The open ledger of a running gateway: database, writer, keys, and the thread that keeps
/// the data plane's key table in step with the `api_keys` table.
public final class Ledger: Sendable {
    public let database: LedgerDatabase
    public let writer: UsageWriter
    public let keys: KeyStore
    public let sink: UsageSink
    let settings: LedgerSettings
    private let logger: Logger
    private let stopping = NIOLockedValueBox(false)
    private let lastKeys = NIOLockedValueBox<[ActiveKey]?>(nil)

    /// Opens (and migrates) the database. Throws a `LedgerError` that says what to do when a
    /// shipped migration was changed or the database is newer than this build.
    public init(settings: LedgerSettings, logger: Logger) throws {
        let migrations = try MigrationLoader.load(directory: settings.migrationsDirectory)
        self.database = try LedgerDatabase.open(path: settings.databasePath, migrations: migrations)
        self.writer = UsageWriter(database: database, logger: logger)
        self.keys = KeyStore(database: database)
        self.sink = UsageSink(writer: writer, replica: settings.replica)
        self.settings = settings
        self.logger = logger
    }

    /// Loads the active keys into `dataPlane` now and keeps them current.
    func startKeyRefresh(into dataPlane: DataPlane) throws {
        try refreshKeys(into: dataPlane)?.wait()
        let thread = Thread { [self] in
            while !stopping.withLockedValue({ $0 }) {
                Thread.sleep(forTimeInterval: Double(settings.keyRefreshInterval.components.attoseconds) / 1e18
                             + Double(settings.keyRefreshInterval.components.seconds))
                do {
                    try refreshKeys(into: dataPlane)?.wait()
                    let used = sink.takeLastUsed()
                    if !used.isEmpty { try keys.recordLastUsed(used) }
                } catch {
                    logger.error("reading API keys from the ledger failed; keeping the current ones", metadata: ["error": "\(error)"])
                }
            }
        }
        thread.name = "tollgate-key-refresh"
        thread.start()
    }

    /// Re-reads the keys; publishes a new table only when they changed. The future completes
    /// once the data plane uses it (a blocking call: not from an event loop).
    @discardableResult
    public func refreshKeys(into dataPlane: DataPlane) throws -> EventLoopFuture<Void>? {
        let active = try keys.activeKeys()
        let changed = lastKeys.withLockedValue { last -> Bool in
            defer { last = active }
            return last != active
        }
        guard changed else { return nil }
        return dataPlane.monitor.installKeys(active).map { _ in () }
    }

    /// Stops the refresher, commits every pending row and stops the writer.
    public func close() async {
        stopping.withLockedValue { $0 = true }
        await writer.close()
    }
}
