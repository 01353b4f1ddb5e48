import Foundation

/// Reads the migration files of a directory (the repository's `migrations/`).
public enum MigrationLoader {
    /// Every `*.sql` file of `directory`, sorted by number. Other files (a README, hidden
    /// files) are ignored. Throws when a `.sql` file is not named `NNNN_description.sql`,
    /// when two files share a number, when a file is not UTF-8, or when there is none.
    public static func load(directory: String) throws -> [Migration] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw LedgerError.migrationsDirectoryUnreadable(directory, "\(error.localizedDescription)")
        }
        var migrations: [Migration] = []
        for name in names where name.hasSuffix(".sql") && !name.hasPrefix(".") {
            let path = (directory as NSString).appendingPathComponent(name)
            guard let data = FileManager.default.contents(atPath: path) else {
                throw LedgerError.migrationsDirectoryUnreadable(path, "the file cannot be read")
            }
            guard Migration.isWellFormed(name) else { throw LedgerError.migrationNameMalformed(name) }
            guard let sql = String(validating: Array(data), as: UTF8.self) else {
                throw LedgerError.migrationNotUTF8(name)
            }
            migrations.append(try Migration(name: name, sql: sql))
        }
        guard !migrations.isEmpty else { throw LedgerError.noMigrations(directory) }
        return try Migration.validated(migrations)
    }

    /// Where the migrations probably are, for commands that were not told: the
    /// `TOLLGATE_MIGRATIONS` environment variable, else `migrations/` in the current
    /// directory, else `migrations/` beside the executable or in one of its parent
    /// directories (a binary in `.build/release/` finds the repository's). Nil if none.
    public static func locateDirectory(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        currentDirectory: String = FileManager.default.currentDirectoryPath,
        executablePath: String? = CommandLine.arguments.first
    ) -> String? {
        if let explicit = environment["TOLLGATE_MIGRATIONS"], !explicit.isEmpty { return explicit }
        func hasMigrations(_ dir: String) -> Bool {
            FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent("0001_usage.sql"))
        }
        let local = (currentDirectory as NSString).appendingPathComponent("migrations")
        if hasMigrations(local) { return local }
        guard let executablePath else { return nil }
        var dir = URL(fileURLWithPath: executablePath, relativeTo: URL(fileURLWithPath: currentDirectory))
            .standardizedFileURL.deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = dir.appendingPathComponent("migrations").path
            if hasMigrations(candidate) { return candidate }
            let parent = dir.deletingLastPathComponent()
            if parent.path == dir.path { break }
            dir = parent
        }
        return nil
    }
}
