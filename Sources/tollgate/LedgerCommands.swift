import ArgumentParser
import Foundation
import TollgateCore
import TollgateLedger

/// Options of the commands that open the ledger.
///
/// A `ParsableArguments` value must come from parsing: reading an `@Option` of one built by
/// hand (`LedgerOptions()`) traps in ArgumentParser. Commands with flags of their own (`report`
/// takes `--database` several times) therefore use the static functions, which take the flag's
/// value and apply the same environment variables and defaults.
struct LedgerOptions: ParsableArguments {
    @Option(help: "The usage ledger, a SQLite file (env TOLLGATE_DATABASE; default: tollgate.sqlite).")
    var database: String?
    @Option(help: "Directory of the numbered SQL migrations (env TOLLGATE_MIGRATIONS; default: ./migrations, or the one beside the executable).")
    var migrations: String?

    var databasePath: String { Self.databasePath(database) }

    func migrationsDirectory() throws -> String { try Self.migrationsDirectory(migrations) }

    func open(readOnly: Bool = false) throws -> LedgerDatabase {
        try Self.open(path: databasePath, migrations: migrations, readOnly: readOnly)
    }

    /// `--database`, else `TOLLGATE_DATABASE`, else `tollgate.sqlite`.
    static func databasePath(_ flag: String?) -> String {
        if let flag { return flag }
        if let env = ProcessInfo.processInfo.environment["TOLLGATE_DATABASE"], !env.isEmpty { return env }
        return "tollgate.sqlite"
    }

    /// `--migrations`, else `TOLLGATE_MIGRATIONS`, `./migrations` or the one beside the executable.
    static func migrationsDirectory(_ flag: String?) throws -> String {
        if let flag { return flag }
        guard let found = MigrationLoader.locateDirectory() else {
            throw ValidationError("no migrations directory found: pass --migrations PATH or set TOLLGATE_MIGRATIONS")
        }
        return found
    }

    /// Opens (and, unless `readOnly`, migrates) the ledger at `path`; a `LedgerError` is
    /// printed and becomes exit status 2.
    static func open(path: String, migrations: String?, readOnly: Bool) throws -> LedgerDatabase {
        do {
            return try LedgerDatabase.open(path: path, migrations: MigrationLoader.load(directory: migrationsDirectory(migrations)), readOnly: readOnly)
        } catch let error as LedgerError {
            FileHandle.standardError.write(Data("tollgate: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

func formatMs(_ ms: Int64?) -> String {
    guard let ms else { return "-" }
    let f = DateFormatter()
    f.dateFormat = "yyyy-MM-dd HH:mm"
    f.timeZone = .current
    return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
}

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply pending migrations to the ledger (serve does this at start).")
    @OptionGroup var ledger: LedgerOptions

    func run() throws {
        let db = try ledger.open()
        let applied = try db.appliedMigrations()
        print("\(ledger.databasePath): \(applied.count) migration(s) applied")
        for name in applied { print("  \(name)") }
    }
}

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list and revoke API keys (stored as SHA-256 in the ledger).",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key; it is printed once, alone on the last line.")
        @OptionGroup var ledger: LedgerOptions
        @OptionGroup var options: ConfigOptions
        @Option(help: "Department the key belongs to (declared in routes/).") var department: String
        @Option(help: "A label, e.g. the service that uses the key.") var name: String?
        @Option(help: "Lifetime such as 90d, 12h, 30m (default: until revoked).") var expires: String?

        func run() throws {
            if let config = try? ConfigurationLoader.load(path: options.path),
               !config.departments.contains(where: { $0.name == department }) {
                throw ValidationError("no department \"\(department)\" in \(options.path); declared: \(config.departments.map(\.name).joined(separator: ", "))")
            }
            let store = KeyStore(database: try ledger.open())
            let lifetime = try expires.map { try KeyStore.parseDuration($0) }
            let created = try store.create(department: department, label: name, expiresIn: lifetime)
            print("created key \(created.info.prefix)… for \(department)\(name.map { " (\($0))" } ?? "")"
                  + (created.info.expiresMs.map { ", expires \(formatMs($0))" } ?? "")
                  + ". It is shown only now; only its SHA-256 is stored:")
            print(created.key)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys: prefix, department, label, created, last used, expiry, revoked.")
        @OptionGroup var ledger: LedgerOptions
        @Option(help: "Only this department's keys.") var department: String?

        func run() throws {
            let keys = try KeyStore(database: try ledger.open()).list(department: department)
            let rows = [["prefix", "department", "label", "created", "last used", "expires", "revoked"]] + keys.map {
                [$0.prefix, $0.department, $0.label ?? "-", formatMs($0.createdMs), formatMs($0.lastUsedMs), formatMs($0.expiresMs), formatMs($0.revokedMs)]
            }
            let widths = (0..<7).map { c in rows.map { $0[c].count }.max() ?? 0 }
            for row in rows {
                print(row.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  "))
            }
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by its prefix; a running gateway refuses it within half a second.")
        @OptionGroup var ledger: LedgerOptions
        @Argument(help: "The key's prefix as `keys list` shows it, e.g. tg-AbCd1234.") var prefix: String

        func run() throws {
            do {
                let info = try KeyStore(database: try ledger.open()).revoke(prefix: prefix)
                print("revoked \(info.prefix) (\(info.department))")
            } catch let error as LedgerError {
                FileHandle.standardError.write(Data("tollgate: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Per-department usage: requests, tokens, quota used, cache hits, errors, p50/p95 latency.")

    @Option(help: "A calendar month, e.g. 2026-11 (default: the current month).") var period: String?
    @Option(help: "First day, e.g. 2026-11-01 (with --to).") var from: String?
    @Option(help: "Last day, inclusive (with --from).") var to: String?
    @Option(help: "Only this department.") var department: String?
    @Option(help: "table, csv or json.") var format = "table"
    @Option(name: .customLong("database"), help: "Ledger file; repeat to merge several replicas' ledgers (default: TOLLGATE_DATABASE or tollgate.sqlite).")
    var databases: [String] = []
    @Option(help: "Directory of the SQL migrations (env TOLLGATE_MIGRATIONS; default: ./migrations, or the one beside the executable).") var migrations: String?
    @Option(help: "Time zone of calendar periods (default: quotas.time_zone of the configuration, else the system's).") var timeZone: String?
    @OptionGroup var options: ConfigOptions

    func run() throws {
        guard ["table", "csv", "json"].contains(format) else { throw ValidationError("--format is table, csv or json") }
        // The configuration, when readable, gives the monthly token quotas and their time zone.
        let config = try? ConfigurationLoader.load(path: options.path)
        let zone = try timeZone.map { name -> TimeZone in
            guard let z = TimeZone(identifier: name) else { throw ValidationError("unknown time zone \(name)") }
            return z
        } ?? config?.quotas.timeZone ?? .current
        let range: ReportPeriod
        if let from, let to {
            range = try ReportPeriod.days(from: from, to: to, timeZone: zone)
        } else if from != nil || to != nil {
            throw ValidationError("--from and --to go together")
        } else {
            let month = period ?? {
                let f = DateFormatter()
                f.dateFormat = "yyyy-MM"
                f.timeZone = zone
                return f.string(from: Date())
            }()
            range = try ReportPeriod.month(month, timeZone: zone)
        }
        let paths = databases.isEmpty ? [LedgerOptions.databasePath(nil)] : databases
        let opened = try paths.map { try LedgerOptions.open(path: $0, migrations: migrations, readOnly: true) }
        var reports = try Reports.departments(databases: opened, period: range, department: department)
        for i in reports.indices {
            if let limit = config?.departments.first(where: { $0.name == reports[i].department })?.quota.tokensPerMonth {
                reports[i].applyQuota(tokenLimit: limit)
            }
        }
        switch format {
        case "csv": print(Reports.csv(reports), terminator: "")
        case "json": print(Reports.json(reports))
        default: print(Reports.table(reports), terminator: "")
        }
    }
}
