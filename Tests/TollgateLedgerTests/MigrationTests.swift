import Foundation
import GRDB
import TollgateCore
import TollgateLedger
import XCTest

final class MigrationTests: LedgerTestCase {
    /// Every migration the repository ships, in order: a new one needs no edit here (two
    /// branches that each add one no longer collide in this test).
    static func shippedMigrations() throws -> [String] {
        let names = try FileManager.default.contentsOfDirectory(atPath: repositoryMigrations).filter { $0.hasSuffix(".sql") }.sorted()
        XCTAssertTrue(names.starts(with: ["0001_usage.sql", "0002_api_keys.sql"]), "\(names)")
        return names
    }

    func testAppliesInOrderAndRecordsChecksums() throws {
        let ledger = try openLedger()
        XCTAssertEqual(try ledger.appliedMigrations(), try Self.shippedMigrations())
        try ledger.close()

        let queue = try DatabaseQueue(path: path("ledger.sqlite"))
        let rows = try queue.read { db in
            try Row.fetchAll(db, sql: "SELECT name, checksum, applied_at FROM tollgate_migrations ORDER BY name")
        }
        for row in rows {
            let name: String = row["name"]
            let bytes = try String(contentsOfFile: "\(Self.repositoryMigrations)/\(name)", encoding: .utf8)
            XCTAssertEqual(row["checksum"], KeyDigest.hex(of: bytes), name)
            XCTAssertFalse((row["applied_at"] as String).isEmpty)
        }
        let (usage, keys, journal) = try queue.read { db in
            (try db.tableExists("usage"), try db.tableExists("api_keys"),
             try String.fetchOne(db, sql: "PRAGMA journal_mode"))
        }
        XCTAssertTrue(usage)
        XCTAssertTrue(keys)
        XCTAssertEqual(journal, "wal")
    }

    func testReopenIsANoOp() throws {
        try openLedger().close()
        let before = try DatabaseQueue(path: path("ledger.sqlite")).read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM tollgate_migrations ORDER BY name")
        }
        let again = try openLedger()
        XCTAssertEqual(try again.appliedMigrations(), try Self.shippedMigrations())
        try again.close()
        let after = try DatabaseQueue(path: path("ledger.sqlite")).read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM tollgate_migrations ORDER BY name")
        }
        XCTAssertEqual(before, after)
        XCTAssertNoThrow(try LedgerDatabase.open(
            path: path("ledger.sqlite"), migrations: MigrationLoader.load(directory: Self.repositoryMigrations),
            readOnly: true))
    }

    func testModifiedAppliedMigrationIsRefused() throws {
        let migrations = try copyMigrations()
        try LedgerDatabase.open(path: path("ledger.sqlite"), migrations: MigrationLoader.load(directory: migrations)).close()
        let file = "\(migrations)/0001_usage.sql"
        try write(try String(contentsOfFile: file, encoding: .utf8) + "\n-- an innocent edit\n", to: file)
        let changed = try MigrationLoader.load(directory: migrations)

        let error = ledgerError(try LedgerDatabase.open(path: path("ledger.sqlite"), migrations: changed))
        XCTAssertEqual(error?.codeString, "migration_changed")
        XCTAssertTrue(error?.description.contains("0001_usage.sql") ?? false, "\(String(describing: error))")
        let readOnly = ledgerError(try LedgerDatabase.open(path: path("ledger.sqlite"), migrations: changed, readOnly: true))
        XCTAssertEqual(readOnly?.codeString, "migration_changed")
    }

    func testDatabaseNewerThanTheCodeIsRefused() throws {
        try openLedger().close()
        try DatabaseQueue(path: path("ledger.sqlite")).write { db in
            try db.execute(sql: "INSERT INTO tollgate_migrations VALUES ('0009_from_the_future.sql', 'abc', '2027-01-01')")
        }
        let error = ledgerError(try openLedger())
        XCTAssertEqual(error?.codeString, "database_newer_than_code")
        XCTAssertTrue(error?.description.contains("0009_from_the_future.sql") ?? false)
        let readOnly = ledgerError(try LedgerDatabase.open(
            path: path("ledger.sqlite"), migrations: MigrationLoader.load(directory: Self.repositoryMigrations), readOnly: true))
        XCTAssertEqual(readOnly?.codeString, "database_newer_than_code")
    }

    func testMalformedNamesAndSharedNumbersAreRefused() throws {
        for bad in ["1_usage.sql", "0003-usage.sql", "0003_Usage.sql", "0003_.sql", "0003_a__b.sql", "00003_x.sql"] {
            let dir = path("bad-\(UUID().uuidString)")
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try write("SELECT 1;", to: "\(dir)/0001_ok.sql")
            try write("SELECT 1;", to: "\(dir)/\(bad)")
            let error = ledgerError(try MigrationLoader.load(directory: dir))
            XCTAssertEqual(error?.codeString, "migration_name_malformed", bad)
            XCTAssertTrue(error?.description.contains(bad) ?? false, bad)
        }
        let dir = path("shared")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try write("SELECT 1;", to: "\(dir)/0001_first.sql")
        try write("SELECT 1;", to: "\(dir)/0001_second.sql")
        try write("not a migration", to: "\(dir)/README.md")
        let error = ledgerError(try MigrationLoader.load(directory: dir))
        XCTAssertEqual(error?.codeString, "migration_number_duplicated")
        XCTAssertTrue(error?.description.contains("0001_first.sql") ?? false)
        XCTAssertTrue(error?.description.contains("0001_second.sql") ?? false)
        XCTAssertEqual(ledgerError(try Migration(name: "usage.sql", sql: ""))?.codeString, "migration_name_malformed")
        XCTAssertEqual(ledgerError(try MigrationLoader.load(directory: path("missing")))?.codeString,
                       "migrations_directory_unreadable")
    }

    func testNewMigrationIsAppliedAndAFailingOneRolledBack() throws {
        let migrations = try copyMigrations()
        try LedgerDatabase.open(path: path("ledger.sqlite"), migrations: MigrationLoader.load(directory: migrations)).close()

        try write("CREATE INDEX usage_request ON usage (request_id);\n", to: "\(migrations)/0004_usage_request_index.sql")
        let ledger = try LedgerDatabase.open(path: path("ledger.sqlite"), migrations: MigrationLoader.load(directory: migrations))
        XCTAssertEqual(try ledger.appliedMigrations().last, "0004_usage_request_index.sql")
        try ledger.close()

        try write("CREATE TABLE half (x INTEGER);\nINSERT INTO nowhere VALUES (1);\n", to: "\(migrations)/0005_broken.sql")
        let error = ledgerError(try LedgerDatabase.open(path: path("ledger.sqlite"), migrations: MigrationLoader.load(directory: migrations)))
        XCTAssertEqual(error?.codeString, "migration_failed")
        XCTAssertTrue(error?.description.contains("0005_broken.sql") ?? false)
        let (half, applied) = try DatabaseQueue(path: path("ledger.sqlite")).read { db in
            (try db.tableExists("half"), try String.fetchAll(db, sql: "SELECT name FROM tollgate_migrations"))
        }
        XCTAssertFalse(half, "the failed migration is rolled back whole")
        XCTAssertFalse(applied.contains("0005_broken.sql"))
    }

    func testAMigrationAddedBeforeAnAppliedOneIsRefused() throws {
        let migrations = try copyMigrations()
        try write("CREATE TABLE later (x INTEGER);\n", to: "\(migrations)/0006_later.sql")
        try LedgerDatabase.open(path: path("ledger.sqlite"), migrations: MigrationLoader.load(directory: migrations)).close()
        try write("CREATE TABLE earlier (x INTEGER);\n", to: "\(migrations)/0004_earlier.sql")
        let error = ledgerError(try LedgerDatabase.open(path: path("ledger.sqlite"), migrations: MigrationLoader.load(directory: migrations)))
        XCTAssertEqual(error?.codeString, "migration_out_of_order")
        XCTAssertTrue(error?.description.contains("0004_earlier.sql") ?? false)
    }

    func testReadOnlyNeedsAnExistingLedger() throws {
        let migrations = try MigrationLoader.load(directory: Self.repositoryMigrations)
        XCTAssertEqual(ledgerError(try LedgerDatabase.open(path: path("none.sqlite"), migrations: migrations, readOnly: true))?.codeString,
                       "database_missing")
        try DatabaseQueue(path: path("other.sqlite")).write { db in try db.execute(sql: "CREATE TABLE t (x)") }
        XCTAssertEqual(ledgerError(try LedgerDatabase.open(path: path("other.sqlite"), migrations: migrations, readOnly: true))?.codeString,
                       "not_a_ledger")
    }

    func testLocatesTheMigrationsDirectory() {
        let found = MigrationLoader.locateDirectory(
            environment: [:], currentDirectory: directory,
            executablePath: Self.repositoryMigrations + "/../.build/release/tollgate")
        XCTAssertEqual(found.map { URL(fileURLWithPath: $0).standardizedFileURL.path },
                       URL(fileURLWithPath: Self.repositoryMigrations).standardizedFileURL.path)
        XCTAssertEqual(MigrationLoader.locateDirectory(environment: ["TOLLGATE_MIGRATIONS": "/x"], currentDirectory: directory,
                                                       executablePath: nil), "/x")
    }
}
