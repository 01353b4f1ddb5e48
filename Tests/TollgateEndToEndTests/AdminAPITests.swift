import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateDataPlane
import TollgateLedger
import TollgateServer
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// `/admin/api/*` on the control plane of a running gateway (both planes, real sockets).
final class AdminAPITests: XCTestCase {
    var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    func testKeysReportsAndReloadNeedTheAdminKey() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let sim = try await SimulatedInstance.start(name: "s", port: 0, gpu: "0", configuration: .init(), group: group)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-admin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let adminKey = "tg-admin-\(UUID().uuidString)"
        try adminKey.write(to: dir.appendingPathComponent("admin.key"), atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: dir.appendingPathComponent("admin.key").path)
        let configFile = dir.appendingPathComponent("gateway.yaml")
        let yaml = """
            listen: {host: 127.0.0.1, port: 0}
            admin: {host: 127.0.0.1, port: 0}
            auth: {admin_key_file: \(dir.appendingPathComponent("admin.key").path)}
            health: {probe_path: ""}
            pools:
              - {name: p, models: [qwen2.5-0.5b-instruct], instances: [{name: s, url: "http://127.0.0.1:\(sim.port)"}]}
            departments:
              - {name: support, quota: {tokens_per_month: 1000}}
              - {name: engineering, keys: [{sha256: \(KeyDigest.hex(of: TestKeys.engineering))}]}
            """
        try yaml.write(to: configFile, atomically: true, encoding: .utf8)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let gateway = try Gateway(
            configuration: try ConfigurationLoader.load(path: configFile.path), configPath: configFile.path,
            ledger: LedgerSettings(databasePath: dir.appendingPathComponent("l.sqlite").path,
                                   migrationsDirectory: repository.appendingPathComponent("migrations").path),
            logger: logger)
        let ports = AsyncStream<(Int, Int)>.makeStream()
        let running = Task { try await gateway.run { data, admin in ports.continuation.yield((data.port!, admin.port!)) } }
        var iterator = ports.stream.makeAsyncIterator()
        let first = await iterator.next()
        let (dataPort, adminPort) = try XCTUnwrap(first)

        let admin = try await HTTPTestClient.connect(port: adminPort, group: group)
        let data = try await HTTPTestClient.connect(port: dataPort, group: group)
        let asAdmin = [("authorization", "Bearer \(adminKey)")]

        // Refused without the admin key; a department key gets 403.
        var a = try await admin.send(.GET, "/admin/api/keys")
        XCTAssertEqual(a.status, 401)
        XCTAssertEqual(a.errorCode, "invalid_api_key")
        a = try await admin.send(.GET, "/admin/api/keys", headers: [("authorization", "Bearer \(TestKeys.engineering)")])
        XCTAssertEqual(a.status, 403)
        a = try await admin.send(.GET, "/admin/api/keys", headers: [("authorization", "Bearer tg-guess")])
        XCTAssertEqual(a.status, 401)
        // The credential is read by the data plane's rule (`Authenticator.credential`): the
        // scheme in any case, spaces after it skipped — on both planes alike.
        for header in ["bearer  \(adminKey)", "BEARER \(adminKey)"] {
            a = try await admin.send(.GET, "/admin/api/keys", headers: [("authorization", header)])
            XCTAssertEqual(a.status, 200, "admin API with \(header.prefix(8))…")
        }
        a = try await admin.send(.GET, "/admin/api/keys", headers: [("authorization", "BEARER   \(TestKeys.engineering)")])
        XCTAssertEqual(a.status, 403, "a department key however spaced")
        let spaced = try await data.send(.GET, "/v1/models", headers: [("authorization", "bearer  \(TestKeys.engineering)")])
        XCTAssertEqual(spaced.status, 200)
        a = try await admin.send(.GET, "/admin/api/keys", headers: [("authorization", "Basic \(adminKey)")])
        XCTAssertEqual(a.status, 401)

        // Create a key, use it, revoke it: refused at once.
        a = try await admin.send(.POST, "/admin/api/keys", body: #"{"department":"support","name":"billing-bot"}"#, headers: asAdmin)
        XCTAssertEqual(a.status, 201, a.body)
        let key = try XCTUnwrap(a.json?["key"] as? String)
        let prefix = try XCTUnwrap((a.json?["info"] as? [String: Any])?["prefix"] as? String)
        XCTAssertTrue(key.hasPrefix("tg-") && key.count >= 46)
        var status = try await data.chat(key: key, extra: #","max_tokens":5"#).status
        XCTAssertEqual(status, 200)
        a = try await admin.send(.POST, "/admin/api/keys", body: #"{"department":"nobody"}"#, headers: asAdmin)
        XCTAssertEqual(a.status, 400)
        a = try await admin.send(.POST, "/admin/api/keys", body: #"{"dept":"x"#, headers: asAdmin)
        XCTAssertEqual(a.status, 400)
        a = try await admin.send(.GET, "/admin/api/keys", headers: asAdmin)
        XCTAssertTrue(a.body.contains(prefix))
        XCTAssertFalse(a.body.contains(key), "the key itself is never shown again")
        a = try await admin.send(.DELETE, "/admin/api/keys/\(prefix)", headers: asAdmin)
        XCTAssertEqual(a.status, 200, a.body)
        status = try await data.chat(key: key).status
        XCTAssertEqual(status, 401, "revocation is in force on the next request")
        a = try await admin.send(.DELETE, "/admin/api/keys/tg-nothere1", headers: asAdmin)
        XCTAssertEqual(a.status, 404)

        // All departments' quota report.
        await gateway.dataPlane.flushUsage()
        await gateway.ledger!.writer.flush()
        a = try await admin.send(.GET, "/admin/api/reports/quota", headers: asAdmin)
        XCTAssertEqual(a.status, 200, a.body)
        let rows = try XCTUnwrap(a.json?["data"] as? [[String: Any]])
        XCTAssertEqual(Set(rows.compactMap { $0["department"] as? String }), ["support", "engineering"])
        let support = try XCTUnwrap(rows.first { $0["department"] as? String == "support" })
        XCTAssertEqual(support["requests"] as? Int, 1)
        XCTAssertEqual(support["tokenLimit"] as? Int ?? support["token_limit"] as? Int, 1000)
        XCTAssertNotNil(support["quotaUsedPercent"] ?? support["quota_used_percent"])

        // Reload through the API: a bad file is refused, a good one swapped in.
        try (yaml + "\nbogus: 1\n").write(to: configFile, atomically: true, encoding: .utf8)
        a = try await admin.send(.POST, "/admin/api/reload", headers: asAdmin)
        XCTAssertEqual(a.status, 422)
        XCTAssertTrue(a.body.contains("bogus"), a.body)
        try yaml.write(to: configFile, atomically: true, encoding: .utf8)
        a = try await admin.send(.POST, "/admin/api/reload", headers: asAdmin)
        XCTAssertEqual(a.status, 200, a.body)

        let health = try await admin.send(.GET, "/healthz")
        XCTAssertEqual(health.status, 200)

        await admin.close()
        await data.close()
        running.cancel()
        _ = try? await running.value
        try await sim.stop()
        try await group.shutdownGracefully()
    }
}
