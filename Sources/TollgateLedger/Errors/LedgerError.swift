/// A failure of the usage ledger: opening the database, migrations, keys and reports.
///
/// Each message says what happened and what the operator can do about it; `codeString`
/// is stable for scripts and tests.
public struct LedgerError: Error, Sendable, CustomStringConvertible {
    private enum Code: String, Sendable {
        case migrationsDirectoryUnreadable = "migrations_directory_unreadable"
        case noMigrations = "no_migrations"
        case migrationNameMalformed = "migration_name_malformed"
        case migrationNumberDuplicated = "migration_number_duplicated"
        case migrationNotUTF8 = "migration_not_utf8"
        case migrationChanged = "migration_changed"
        case databaseNewerThanCode = "database_newer_than_code"
        case migrationOutOfOrder = "migration_out_of_order"
        case migrationFailed = "migration_failed"
        case databaseMissing = "database_missing"
        case notALedger = "not_a_ledger"
        case cannotOpen = "cannot_open"
        case keyNotFound = "key_not_found"
        case keyAlreadyRevoked = "key_already_revoked"
        case invalidDepartment = "invalid_department"
        case invalidDuration = "invalid_duration"
        case invalidLabel = "invalid_label"
        case invalidPeriod = "invalid_period"
        case periodTooLong = "period_too_long"
        case corruptRow = "corrupt_row"
    }

    private let code: Code
    /// What happened and what to do, for the operator.
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var codeString: String { code.rawValue }
    public var description: String { message }

    static func migrationsDirectoryUnreadable(_ path: String, _ reason: String) -> LedgerError {
        LedgerError(.migrationsDirectoryUnreadable,
                    "Cannot read the migrations directory \(path): \(reason). Point --migrations (or TOLLGATE_MIGRATIONS) at the repository's migrations/ directory.")
    }
    static func noMigrations(_ path: String) -> LedgerError {
        LedgerError(.noMigrations,
                    "No NNNN_description.sql files in \(path). Point --migrations (or TOLLGATE_MIGRATIONS) at the repository's migrations/ directory.")
    }
    static func migrationNameMalformed(_ file: String) -> LedgerError {
        LedgerError(.migrationNameMalformed,
                    "Migration file \(file) is not named NNNN_description.sql (four digits, an underscore, lower-case words joined by underscores). Rename it, e.g. 0003_add_index.sql.")
    }
    static func migrationNumberDuplicated(_ first: String, _ second: String) -> LedgerError {
        LedgerError(.migrationNumberDuplicated,
                    "Migration files \(first) and \(second) share the number \(first.prefix(4)). Give the newer one the next free number.")
    }
    static func migrationNotUTF8(_ file: String) -> LedgerError {
        LedgerError(.migrationNotUTF8, "Migration file \(file) is not valid UTF-8 text. Save it as UTF-8.")
    }
    static func migrationChanged(_ file: String, applied: String, current: String) -> LedgerError {
        LedgerError(.migrationChanged,
                    "Migration \(file) was changed after it was applied to this database (applied checksum \(applied.prefix(12))…, file now \(current.prefix(12))…). Shipped migrations must never be edited: restore the original file (git checkout) and put the change in a new numbered migration.")
    }
    static func databaseNewerThanCode(_ files: [String], path: String) -> LedgerError {
        LedgerError(.databaseNewerThanCode,
                    "The database \(path) has migrations this version of Tollgate does not know: \(files.joined(separator: ", ")). It was migrated by a newer Tollgate. Run that newer version, or point --migrations at a directory that has these files.")
    }
    static func migrationOutOfOrder(_ file: String, after: String) -> LedgerError {
        LedgerError(.migrationOutOfOrder,
                    "Migration \(file) is not applied, but the later \(after) already is. Migrations apply in order: renumber \(file) to come after \(after).")
    }
    static func migrationFailed(_ file: String, _ underlying: any Error) -> LedgerError {
        LedgerError(.migrationFailed,
                    "Migration \(file) failed and was rolled back: \(underlying). Fix the SQL in a new migration if \(file) has shipped, or in the file itself if it has never been applied anywhere.")
    }
    static func databaseMissing(_ path: String) -> LedgerError {
        LedgerError(.databaseMissing,
                    "No ledger database at \(path). Check --database, or start the gateway (or `tollgate migrate`) once to create it.")
    }
    static func notALedger(_ path: String) -> LedgerError {
        LedgerError(.notALedger,
                    "\(path) is not a Tollgate ledger (no tollgate_migrations table). Check --database, or run `tollgate migrate` on it.")
    }
    static func cannotOpen(_ path: String, _ underlying: any Error) -> LedgerError {
        LedgerError(.cannotOpen,
                    "Cannot open the ledger database \(path): \(underlying). Check that the directory exists and is writable by this user and that the disk is not full.")
    }
    static func keyNotFound(_ prefix: String) -> LedgerError {
        LedgerError(.keyNotFound, "No API key with prefix \(prefix). `tollgate keys list` shows the prefixes.")
    }
    static func keyAlreadyRevoked(_ prefix: String, atMs: Int64) -> LedgerError {
        LedgerError(.keyAlreadyRevoked, "The API key \(prefix) was already revoked (at \(atMs) ms since 1970). Nothing to do.")
    }
    static func invalidDepartment(_ name: String) -> LedgerError {
        LedgerError(.invalidDepartment, "Invalid department name \"\(name)\": it must not be empty.")
    }
    static func invalidDuration(_ text: String) -> LedgerError {
        LedgerError(.invalidDuration,
                    "Invalid duration \"\(text)\": write a positive whole number and a unit, e.g. 90d, 12h, 30m, 45s or 2w.")
    }
    static func labelTooLong(maxCharacters: Int) -> LedgerError {
        LedgerError(.invalidLabel, "The key's label is too long: at most \(maxCharacters) characters.")
    }
    static func durationTooLong(_ text: String, maxDays: Int) -> LedgerError {
        LedgerError(.invalidDuration,
                    "Invalid duration \"\(text)\": a key's lifetime is at most \(maxDays)d; omit it for a key that lasts until revoked.")
    }
    static func invalidPeriod(_ text: String) -> LedgerError {
        LedgerError(.invalidPeriod,
                    "Invalid period \(text): write --period YYYY-MM (a calendar month) or --from YYYY-MM-DD --to YYYY-MM-DD (both days included, --to not before --from; years 1970 to 9999).")
    }
    static func periodTooLong(maxDays: Int) -> LedgerError {
        LedgerError(.periodTooLong,
                    "The period is too long: a report covers at most \(maxDays) days. Ask for several shorter periods (e.g. one --period YYYY-MM per month).")
    }
    static func corruptRow(_ what: String) -> LedgerError {
        LedgerError(.corruptRow, "Unexpected value in the ledger: \(what). Was the database written by a newer Tollgate?")
    }
}
