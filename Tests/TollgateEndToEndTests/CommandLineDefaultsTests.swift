import Foundation
import TollgateCore
import TollgateTestSupport
import XCTest

/// Every subcommand of the built `tollgate` binary, called the way README.md ("Commands")
/// shows it: with the defaults (`tollgate.sqlite` and `routes/` in the current directory) and
/// with the environment variables (`TOLLGATE_DATABASE`, `TOLLGATE_CONFIG`,
/// `TOLLGATE_MIGRATIONS`), not only with flags. `tollgate report` without `--database` used
/// to trap in ArgumentParser ("Can't read a value from a parsable argument definition").
final class CommandLineDefaultsTests: XCTestCase {
    var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("tollgate")
    }

    var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// Runs the binary in `directory` with the test's environment minus every `TOLLGATE_*`
    /// variable, plus `environment`.
    func run(_ arguments: [String], in directory: URL, environment: [String: String] = [:], stdin: String? = nil)
        throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.currentDirectoryURL = directory
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("TOLLGATE_") }
        env.merge(environment) { $1 }
        process.environment = env
        let out = Pipe(), err = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    private func makeDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    private let config = """
        pools: [{name: p, models: [m], instances: [{name: s, url: "http://127.0.0.1:1"}]}]
        departments: [{name: eng, quota: {tokens_per_month: 900}}]

        """

    /// In a directory holding `routes/` and a copy of `migrations/`, with no flag and no
    /// environment: every command finds `./tollgate.sqlite`, `./routes` and `./migrations`.
    func testEveryCommandWorksWithTheDefaults() throws {
        let dir = try makeDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("routes"), withIntermediateDirectories: true)
        try config.write(to: dir.appendingPathComponent("routes/g.yaml"), atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(at: repository.appendingPathComponent("migrations"), to: dir.appendingPathComponent("migrations"))

        try exerciseEveryCommand(in: dir, environment: [:], database: dir.appendingPathComponent("tollgate.sqlite"))
    }

    /// From an unrelated working directory, with `TOLLGATE_DATABASE`, `TOLLGATE_CONFIG` and
    /// `TOLLGATE_MIGRATIONS` only.
    func testEveryCommandWorksWithTheEnvironment() throws {
        let dir = try makeDirectory()
        let elsewhere = try makeDirectory()
        defer {
            try? FileManager.default.removeItem(at: dir)
            try? FileManager.default.removeItem(at: elsewhere)
        }
        try config.write(to: dir.appendingPathComponent("g.yaml"), atomically: true, encoding: .utf8)
        let database = dir.appendingPathComponent("data/ledger.sqlite")
        let environment = [
            "TOLLGATE_DATABASE": database.path,
            "TOLLGATE_CONFIG": dir.appendingPathComponent("g.yaml").path,
            "TOLLGATE_MIGRATIONS": repository.appendingPathComponent("migrations").path,
        ]
        try exerciseEveryCommand(in: elsewhere, environment: environment, database: database)
        XCTAssertFalse(FileManager.default.fileExists(atPath: elsewhere.appendingPathComponent("tollgate.sqlite").path),
                       "TOLLGATE_DATABASE wins over the default")
    }

    /// `check` says what `serve` would refuse: an admin key file others can read.
    func testCheckRefusesAnAdminKeyFileOthersCanRead() throws {
        let dir = try makeDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let keyFile = dir.appendingPathComponent("admin.key")
        try "tg-admin-secret".write(to: keyFile, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: keyFile.path)
        try (config + "auth: {admin_key_file: \(keyFile.path)}\n").write(to: dir.appendingPathComponent("g.yaml"), atomically: true, encoding: .utf8)
        let environment = ["TOLLGATE_CONFIG": dir.appendingPathComponent("g.yaml").path,
                           "TOLLGATE_DATABASE": dir.appendingPathComponent("l.sqlite").path,
                           "TOLLGATE_MIGRATIONS": repository.appendingPathComponent("migrations").path]
        var r = try run(["check"], in: dir, environment: environment)
        XCTAssertEqual(r.status, 1, r.out)
        XCTAssertTrue(r.err.contains("chmod 600 \(keyFile.path)"), r.err)
        XCTAssertFalse(r.err.contains("tg-admin-secret") || r.out.contains("tg-admin-secret"))
        // serve refuses to start on it, saying the same.
        r = try run(["serve", "--port", "0", "--admin-port", "0"], in: dir, environment: environment)
        XCTAssertEqual(r.status, 2, r.out)
        XCTAssertTrue(r.err.contains("chmod 600"), r.err)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: keyFile.path)
        r = try run(["check"], in: dir, environment: environment)
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("admin key: OK (\(keyFile.path))"), r.out)
    }

    private func exerciseEveryCommand(in dir: URL, environment: [String: String], database: URL,
                                      file: StaticString = #filePath, line: UInt = #line) throws {
        func ok(_ arguments: [String], stdin: String? = nil) throws -> String {
            let r = try run(arguments, in: dir, environment: environment, stdin: stdin)
            XCTAssertEqual(r.status, 0, "tollgate \(arguments.joined(separator: " ")): \(r.err)", file: file, line: line)
            XCTAssertFalse(r.err.contains("Fatal error"), r.err, file: file, line: line)
            return r.out
        }
        // As many as the repository ships (a new migration needs no edit here).
        let shipped = try FileManager.default.contentsOfDirectory(atPath: repository.appendingPathComponent("migrations").path)
            .filter { $0.hasSuffix(".sql") }.count
        let migrated = try ok(["migrate"])
        XCTAssertTrue(migrated.contains("\(database.path): \(shipped) migration(s) applied") || migrated.contains("\(shipped) migration(s) applied"), migrated, file: file, line: line)
        XCTAssertTrue(FileManager.default.fileExists(atPath: database.path), "migrate created \(database.path)", file: file, line: line)
        let mode = (try FileManager.default.attributesOfItem(atPath: database.path)[.posixPermissions] as? NSNumber)?.intValue
        XCTAssertEqual(mode, 0o600, "the ledger holds prompt previews: owner only", file: file, line: line)

        let created = try ok(["keys", "create", "--department", "eng", "--name", "ci", "--expires", "90d"])
        let key = try XCTUnwrap(created.split(separator: "\n").last.map(String.init), file: file, line: line)
        XCTAssertTrue(key.hasPrefix("tg-"), created, file: file, line: line)
        let prefix = String(key.prefix(11))
        // The department is checked against the configuration the defaults find.
        let refused = try run(["keys", "create", "--department", "nobody"], in: dir, environment: environment)
        XCTAssertNotEqual(refused.status, 0, file: file, line: line)
        XCTAssertTrue(refused.err.contains("no department \"nobody\""), refused.err, file: file, line: line)

        let listed = try ok(["keys", "list"])
        XCTAssertTrue(listed.contains(prefix), listed, file: file, line: line)
        XCTAssertTrue(try ok(["keys", "list", "--department", "eng"]).contains(prefix), file: file, line: line)

        let report = try ok(["report"])
        XCTAssertTrue(report.contains("DEPARTMENT"), report, file: file, line: line)
        let json = try ok(["report", "--format", "json", "--department", "eng"])
        let rows = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]], json, file: file, line: line)
        XCTAssertEqual(rows.first?["department"] as? String, "eng", file: file, line: line)
        XCTAssertEqual((rows.first?["tokenLimit"] ?? rows.first?["token_limit"]) as? Int, 900, "the quota comes from the default configuration: \(json)", file: file, line: line)
        _ = try ok(["report", "--period", "2026-11", "--format", "csv"])
        _ = try ok(["report", "--from", "2026-11-01", "--to", "2026-11-30"])

        let revoked = try ok(["keys", "revoke", prefix])
        XCTAssertTrue(revoked.contains("revoked \(prefix)"), revoked, file: file, line: line)

        let checked = try ok(["check"])
        XCTAssertTrue(checked.contains("OK, \(shipped) migration(s) applied"), checked, file: file, line: line)
        XCTAssertTrue(checked.contains("admin key: none"), checked, file: file, line: line)

        XCTAssertEqual(try ok(["hash-key"], stdin: "tg-secret\n").trimmingCharacters(in: .whitespacesAndNewlines),
                       KeyDigest.hex(of: "tg-secret"), file: file, line: line)
        for command in [["serve"], ["sim"], ["reference-proxy"], ["keys"], []] {
            _ = try ok(command + ["--help"])
        }
    }
}
