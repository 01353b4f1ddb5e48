import Foundation
import GRDB
import Logging
import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateDataPlane
import TollgateLedger
import TollgateServer
import TollgateTestSupport
import XCTest

/// The control plane from an attacker's side (issue #13): numbers that overflow, cross-site
/// requests riding the admin page's cookie, a leaked admin key that outlives its rotation,
/// and a key file others can read. Every refusal is an OpenAI-format error with its status.
final class AdminHardeningTests: XCTestCase {
    /// `{"expires":"106751991167d"}` used to trap the control plane (createdMs + lifetime).
    func testHugeKeyLifetimesAreA400NotATrap() async throws {
        let h = try await AdminHarness.start()
        defer { Task { await h.stop() } }
        let admin = try await h.admin()
        let asAdmin = [("authorization", "Bearer \(h.adminKey)")]
        for expires in ["106751991167d", "9223372036854775807s", "99999999999999999999999d", "3661d", "-1d", "0d"] {
            let a = try await admin.send(.POST, "/admin/api/keys", body: #"{"department":"support","expires":"\#(expires)"}"#, headers: asAdmin)
            XCTAssertEqual(a.status, 400, "\(expires): \(a.body)")
            XCTAssertEqual(a.errorCode, "invalid_duration", a.body)
            XCTAssertEqual(a.errorType, "invalid_request_error", a.body)
        }
        let longName = try await admin.send(.POST, "/admin/api/keys", body: #"{"department":"support","name":"\#(String(repeating: "n", count: 5000))"}"#, headers: asAdmin)
        XCTAssertEqual(longName.status, 400, longName.body)
        XCTAssertEqual(longName.errorCode, "invalid_label", longName.body)
        let ok = try await admin.send(.POST, "/admin/api/keys", body: #"{"department":"support","expires":"3660d"}"#, headers: asAdmin)
        XCTAssertEqual(ok.status, 201, ok.body)
        let health = try await admin.send(.GET, "/healthz")
        XCTAssertEqual(health.status, 200, "the control plane is still up")
        await admin.close()
    }

    /// A ledger holding reservations near 2^63 (written before rows were clamped): SQLite's
    /// sum() failed with "integer overflow" while seeding the quota counters, and `serve`
    /// without Redis exited at start.
    func testAGatewayStartsOnALedgerWithHugeReservations() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-huge-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let repository = AdminHarness.repository
        let path = dir.appendingPathComponent("ledger.sqlite").path
        let migrations = repository.appendingPathComponent("migrations").path
        try LedgerDatabase.open(path: path, migrations: MigrationLoader.load(directory: migrations)).close()
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let queue = try DatabaseQueue(path: path)
        try await queue.write { db in
            for i in 0..<2 {
                try db.execute(sql: """
                    INSERT INTO usage (time_ms, request_id, department, endpoint, status, latency_ms, cache, stream, reserved_tokens)
                    VALUES (?, ?, 'support', 'chat', 200, 1.0, 'miss', 0, ?)
                    """, arguments: [now - Int64(i), "r\(i)", Int64.max - 1])
            }
        }
        try queue.close()
        let config = try ConfigurationLoader.parse("""
            listen: {host: 127.0.0.1, port: 0}
            admin: {host: 127.0.0.1, port: 0}
            pools: [{name: p, models: [m], instances: [{name: s, url: "http://127.0.0.1:1"}]}]
            departments: [{name: support, quota: {tokens_per_month: 1000}}]
            """)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let gateway = try Gateway(configuration: config, configPath: nil,
                                  ledger: LedgerSettings(databasePath: path, migrationsDirectory: migrations), logger: logger)
        XCTAssertEqual(try Reports.tokenSumsByDepartment(database: gateway.ledger!.database, since: 0)["support"]?.tokens, Reports.maxSum)
        await gateway.ledger!.close()
        await gateway.dataPlane.shutdown(grace: .zero)
    }

    private func login(_ h: AdminHarness, _ client: HTTPTestClient, key: String? = nil) async throws -> String {
        let encoded = (key ?? h.adminKey).addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        let a = try await client.send(.POST, "/admin/login", body: "key=\(encoded)", headers: [("content-type", "application/x-www-form-urlencoded")])
        XCTAssertEqual(a.status, 303, a.body)
        let setCookie = try XCTUnwrap(a.headers.first(name: "set-cookie"))
        return String(setCookie.split(separator: ";")[0])
    }

    private func keyCount(_ h: AdminHarness) throws -> Int {
        try KeyStore(database: h.ledger).list().count
    }

    /// A page on another origin posts to the admin API; the browser attaches the session
    /// cookie (same site: another port on 127.0.0.1 is enough, SameSite does not help).
    func testCrossSiteRequestsWithTheSessionCookieAreRefused() async throws {
        let h = try await AdminHarness.start()
        defer { Task { await h.stop() } }
        let admin = try await h.admin()
        let cookie = try await login(h, admin)
        let host = "127.0.0.1:\(h.adminPort)"
        let body = #"{"department":"support","name":"evil"}"#
        let before = try keyCount(h)

        func expectRefused(_ method: HTTPMethod, _ path: String, body: String? = nil, _ headers: [(String, String)],
                           line: UInt = #line) async throws {
            let a = try await admin.send(method, path, body: body, headers: [("cookie", cookie), ("host", host)] + headers)
            XCTAssertEqual(a.status, 403, "\(method) \(path) \(headers): \(a.body)", line: line)
            XCTAssertEqual(a.errorCode, "cross_site_request", a.body, line: line)
            XCTAssertEqual(a.errorType, "invalid_request_error", a.body, line: line)
        }
        // The attack as reported: text/plain (no preflight) from another origin.
        try await expectRefused(.POST, "/admin/api/keys", body: body, [("content-type", "text/plain"), ("origin", "http://evil.example")])
        try await expectRefused(.POST, "/admin/api/keys", body: body, [("content-type", "application/json"), ("origin", "http://evil.example")])
        try await expectRefused(.POST, "/admin/api/keys", body: body, [("origin", "http://127.0.0.1:1")])  // same site, other port
        try await expectRefused(.POST, "/admin/api/keys", body: body, [("origin", "null")])
        try await expectRefused(.POST, "/admin/api/keys", body: body, [("sec-fetch-site", "same-site")])
        try await expectRefused(.POST, "/admin/api/keys", body: body, [("sec-fetch-site", "cross-site"), ("origin", "http://\(host)")])
        // Nothing says where it came from: refused too.
        try await expectRefused(.POST, "/admin/api/keys", body: body, [])
        // Same origin, but a form's content type: a page could not have sent it with fetch
        // without a preflight, and the API takes JSON only.
        try await expectRefused(.POST, "/admin/api/keys", body: body, [("content-type", "text/plain"), ("origin", "http://\(host)")])
        try await expectRefused(.POST, "/admin/api/keys", body: body, [("content-type", "application/x-www-form-urlencoded"), ("sec-fetch-site", "same-origin")])
        try await expectRefused(.POST, "/admin/api/reload", [("origin", "http://evil.example")])
        try await expectRefused(.DELETE, "/admin/api/keys/tg-AbCd1234", [("origin", "http://evil.example")])
        try await expectRefused(.DELETE, "/admin/api/cache", [("sec-fetch-site", "cross-site")])
        XCTAssertEqual(try keyCount(h), before, "no key was created")

        // Logout from another origin does not end the session.
        var a = try await admin.send(.POST, "/admin/logout", headers: [("cookie", cookie), ("host", host), ("origin", "http://evil.example")])
        XCTAssertEqual(a.status, 403, a.body)
        a = try await admin.send(.GET, "/admin", headers: [("cookie", cookie)])
        XCTAssertEqual(a.status, 200, "the session survived")

        // Reading is not state-changing: a GET with a foreign Origin still answers.
        a = try await admin.send(.GET, "/admin/api/keys", headers: [("cookie", cookie), ("origin", "http://evil.example")])
        XCTAssertEqual(a.status, 200, a.body)

        // The admin page's own requests pass: same Origin, or Sec-Fetch-Site same-origin / none.
        a = try await admin.send(.POST, "/admin/api/keys", body: body, headers: [("cookie", cookie), ("host", host), ("origin", "http://\(host)")])
        XCTAssertEqual(a.status, 201, a.body)
        a = try await admin.send(.POST, "/admin/api/keys", body: body, headers: [("cookie", cookie), ("sec-fetch-site", "same-origin")])
        XCTAssertEqual(a.status, 201, a.body)
        a = try await admin.send(.POST, "/admin/api/keys", body: body,
                                 headers: [("cookie", cookie), ("sec-fetch-site", "none"), ("content-type", "application/json; charset=utf-8")])
        XCTAssertEqual(a.status, 201, a.body)
        a = try await admin.send(.POST, "/admin/api/reload", headers: [("cookie", cookie), ("host", host), ("origin", "http://\(host)")])
        XCTAssertEqual(a.status, 200, a.body)

        // The bearer key cannot be forged by a browser: such requests stay as they were.
        a = try await admin.send(.POST, "/admin/api/keys", body: body,
                                 headers: [("authorization", "Bearer \(h.adminKey)"), ("content-type", "text/plain"), ("origin", "http://evil.example")])
        XCTAssertEqual(a.status, 201, a.body)

        // Logout from the page itself works.
        a = try await admin.send(.POST, "/admin/logout", headers: [("cookie", cookie), ("host", host), ("origin", "http://\(host)")])
        XCTAssertEqual(a.status, 303, a.body)
        await admin.close()
    }

    /// A leaked admin key is rotated in `admin_key_file`, then the gateway reloads (the API or
    /// SIGHUP): the old key and every session opened with it stop working at once.
    func testRotatingTheAdminKeyEndsTheOldKeyAndItsSessions() async throws {
        let h = try await AdminHarness.start()
        defer { Task { await h.stop() } }
        let admin = try await h.admin()
        let oldKey = h.adminKey
        let cookie = try await login(h, admin)
        var a = try await admin.send(.GET, "/admin/api/keys", headers: [("cookie", cookie)])
        XCTAssertEqual(a.status, 200)

        let newKey = "tg-admin-rotated-\(UUID().uuidString)"
        let keyFile = h.directory.appendingPathComponent("admin.key").path
        try newKey.write(toFile: keyFile, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: keyFile)
        a = try await admin.send(.POST, "/admin/api/reload", headers: [("authorization", "Bearer \(oldKey)")])
        XCTAssertEqual(a.status, 200, a.body)
        XCTAssertEqual(a.json?["adminKeyChanged"] as? Bool, true, a.body)

        a = try await admin.send(.GET, "/admin/api/keys", headers: [("authorization", "Bearer \(oldKey)")])
        XCTAssertEqual(a.status, 401, "the old key is refused: \(a.body)")
        a = try await admin.send(.GET, "/admin/api/keys", headers: [("cookie", cookie)])
        XCTAssertEqual(a.status, 401, "the old key's session ended: \(a.body)")
        a = try await admin.send(.GET, "/admin", headers: [("cookie", cookie)])
        XCTAssertEqual(a.status, 303, "the page sends the old session to the login")
        a = try await admin.send(.GET, "/admin/api/keys", headers: [("authorization", "Bearer \(newKey)")])
        XCTAssertEqual(a.status, 200, a.body)
        let newCookie = try await login(h, admin, key: newKey)

        // A reload that leaves the key as it is keeps the sessions.
        a = try await admin.send(.POST, "/admin/api/reload", headers: [("authorization", "Bearer \(newKey)")])
        XCTAssertEqual(a.json?["adminKeyChanged"] as? Bool, false, a.body)
        a = try await admin.send(.GET, "/admin/api/keys", headers: [("cookie", newCookie)])
        XCTAssertEqual(a.status, 200, a.body)

        // SIGHUP takes the same path (Gateway.reload).
        let third = "tg-admin-third-\(UUID().uuidString)"
        try third.write(toFile: keyFile, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: keyFile)
        XCTAssertNoThrow(try h.gateway.reload().get())
        a = try await admin.send(.GET, "/admin/api/keys", headers: [("cookie", newCookie)])
        XCTAssertEqual(a.status, 401, a.body)
        a = try await admin.send(.GET, "/admin/api/keys", headers: [("authorization", "Bearer \(third)")])
        XCTAssertEqual(a.status, 200, a.body)
        await admin.close()
    }

    /// A reload names the changed settings it cannot apply, instead of ignoring them.
    func testReloadSaysWhatNeedsARestart() async throws {
        let h = try await AdminHarness.start()
        defer { Task { await h.stop() } }
        let admin = try await h.admin()
        let yaml = try String(contentsOfFile: h.configPath, encoding: .utf8)
        try yaml.replacingOccurrences(of: "event_loops: 2", with: "event_loops: 3")
            .replacingOccurrences(of: "listen: {host: 127.0.0.1, port: 0}", with: "listen: {host: 127.0.0.1, port: 1}")
            .write(toFile: h.configPath, atomically: true, encoding: .utf8)
        let a = try await admin.send(.POST, "/admin/api/reload", headers: [("authorization", "Bearer \(h.adminKey)")])
        XCTAssertEqual(a.status, 200, a.body)
        XCTAssertEqual(a.json?["restartRequired"] as? [String], ["listen", "event_loops"], a.body)
        await admin.close()
    }

    /// Reloads run one at a time, so the configuration read last is the one in force.
    func testConcurrentReloadsInstallTheLastRead() async throws {
        let h = try await AdminHarness.start()
        defer { Task { await h.stop() } }
        let yaml = try String(contentsOfFile: h.configPath, encoding: .utf8)
        let gateway = h.gateway
        for round in 0..<5 {
            await withTaskGroup(of: Void.self) { tasks in
                for _ in 0..<8 { tasks.addTask { _ = gateway.reload() } }
            }
            try yaml.replacingOccurrences(of: "tokens_per_month: 1}", with: "tokens_per_month: \(round + 2)}")
                .write(toFile: h.configPath, atomically: true, encoding: .utf8)
            let generation = gateway.dataPlane.state.table.generation
            XCTAssertNoThrow(try gateway.reload().get())
            let table = gateway.dataPlane.state.table
            XCTAssertEqual(table.generation, generation + 1)
            XCTAssertEqual(table.configuration.departments.first { $0.name == "interns" }?.quota.tokensPerMonth, round + 2)
        }
    }

    /// Prompt previews are a setting; the page says when the ledger keeps none.
    func testTheAdminPageSaysWhenPromptPreviewsAreOff() async throws {
        let h = try await AdminHarness.start()
        defer { Task { await h.stop() } }
        let admin = try await h.admin()
        let asAdmin = [("authorization", "Bearer \(h.adminKey)")]
        var a = try await admin.send(.GET, "/admin/api/overview", headers: asAdmin)
        XCTAssertEqual((a.json?["promptPreview"] as? [String: Any])?["global"] as? String, "120", a.body)
        let cookie = try await login(h, admin)
        a = try await admin.send(.GET, "/admin", headers: [("cookie", cookie)])
        XCTAssertFalse(a.body.contains("Prompt previews are off"))

        let yaml = try String(contentsOfFile: h.configPath, encoding: .utf8)
        try (yaml + "\nprompt_preview: off\n").write(toFile: h.configPath, atomically: true, encoding: .utf8)
        XCTAssertNoThrow(try h.gateway.reload().get())
        XCTAssertEqual(h.gateway.dataPlane.state.table.departments.first?.promptPreview, .off)
        a = try await admin.send(.GET, "/admin/api/overview", headers: asAdmin)
        XCTAssertEqual((a.json?["promptPreview"] as? [String: Any])?["global"] as? String, "off", a.body)
        a = try await admin.send(.GET, "/admin", headers: [("cookie", cookie)])
        XCTAssertTrue(a.body.contains("Prompt previews are off"), a.body)

        try (yaml.replacingOccurrences(of: "  - name: interns\n", with: "  - name: interns\n    prompt_preview: off\n"))
            .write(toFile: h.configPath, atomically: true, encoding: .utf8)
        XCTAssertNoThrow(try h.gateway.reload().get())
        a = try await admin.send(.GET, "/admin", headers: [("cookie", cookie)])
        XCTAssertTrue(a.body.contains("Prompt previews are off for interns"), a.body)
        await admin.close()
    }

    /// A key file others can read is refused, with the fix in the message; the running key stays.
    func testAGroupReadableAdminKeyFileIsRefused() async throws {
        let h = try await AdminHarness.start()
        defer { Task { await h.stop() } }
        let keyFile = h.directory.appendingPathComponent("admin.key").path
        try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: keyFile)
        let admin = try await h.admin()
        var a = try await admin.send(.POST, "/admin/api/reload", headers: [("authorization", "Bearer \(h.adminKey)")])
        XCTAssertEqual(a.status, 422, a.body)
        XCTAssertTrue(a.body.contains("chmod 600"), a.body)
        a = try await admin.send(.GET, "/admin/api/keys", headers: [("authorization", "Bearer \(h.adminKey)")])
        XCTAssertEqual(a.status, 200, "the running key stays")
        await admin.close()

        // At start: refused.
        var config = h.gateway.dataPlane.state.table.configuration
        config.listen.port = 0
        config.admin.port = 0
        XCTAssertThrowsError(try Gateway(configuration: config, configPath: nil, logger: .init(label: "t"))) { error in
            XCTAssertTrue("\(error)".contains("chmod 600"), "\(error)")
        }
    }
}
