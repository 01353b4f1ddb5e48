import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// README, "Admin API": the admin key is `TOLLGATE_ADMIN_KEY`, or the file named by
/// `auth.admin_key_file` (`TOLLGATE_ADMIN_KEY` wins); without an admin key configured the
/// admin API answers 503. Checked on the real `tollgate serve`, whose environment the test sets.
final class AdminKeySourceTests: XCTestCase {
    var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("tollgate")
    }

    var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// A `tollgate serve` on free ports with `environment` (and nothing of the test's own), until
    /// `body` returns; then SIGTERM and wait.
    private func serve(keyFile: String?, environment: [String: String],
                       _ body: (_ admin: HTTPTestClient) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let sim = try await SimulatedInstance.start(name: "s", port: 0, gpu: "0", configuration: .init(), group: group)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-admin-key-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var yaml = """
            listen: {host: 127.0.0.1, port: 0}
            admin: {host: 127.0.0.1, port: 0}
            health: {probe_path: ""}
            pools:
              - {name: p, models: [qwen2.5-0.5b-instruct], instances: [{name: s, url: "http://127.0.0.1:\(sim.port)"}]}
            departments:
              - {name: engineering, keys: [{sha256: \(KeyDigest.hex(of: TestKeys.engineering))}]}
            """
        if let keyFile {
            let path = dir.appendingPathComponent("admin.key").path
            try keyFile.write(toFile: path, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
            yaml += "\nauth: {admin_key_file: \(path)}\n"
        }
        try yaml.write(to: dir.appendingPathComponent("gateway.yaml"), atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = executable
        process.arguments = ["serve", "--config", dir.appendingPathComponent("gateway.yaml").path,
                             "--database", dir.appendingPathComponent("ledger.sqlite").path,
                             "--migrations", repository.appendingPathComponent("migrations").path]
        process.environment = environment.merging(["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin"]) { a, _ in a }
        let output = ProcessOutput(process)
        try process.run()
        defer {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
        let client = try await HTTPTestClient.connect(port: try await output.listeningPort("control plane"), group: group)
        do {
            try await body(client)
        } catch {
            await client.close()
            throw error
        }
        await client.close()
        try await sim.stop()
        try await group.shutdownGracefully()
    }

    func testTheEnvironmentsAdminKeyOpensTheAdminAPIAndWinsOverTheFile() async throws {
        let envKey = "tg-admin-env-\(UUID().uuidString)", fileKey = "tg-admin-file-\(UUID().uuidString)"
        try await serve(keyFile: fileKey, environment: ["TOLLGATE_ADMIN_KEY": envKey]) { admin in
            var a = try await admin.send(.GET, "/admin/api/keys", headers: [("authorization", "Bearer \(envKey)")])
            XCTAssertEqual(a.status, 200, a.body)
            a = try await admin.send(.GET, "/admin/api/keys", headers: [("authorization", "Bearer \(fileKey)")])
            XCTAssertEqual(a.status, 401, "the file's key is not in force: \(a.body)")
            XCTAssertEqual(a.errorCode, "invalid_api_key")
        }
        // Without the variable the file's key is the one.
        try await serve(keyFile: fileKey, environment: [:]) { admin in
            let a = try await admin.send(.GET, "/admin/api/keys", headers: [("authorization", "Bearer \(fileKey)")])
            XCTAssertEqual(a.status, 200, a.body)
        }
    }

    func testWithoutAnAdminKeyTheAdminAPIAnswers503() async throws {
        try await serve(keyFile: nil, environment: [:]) { admin in
            let variants: [[(String, String)]] = [[], [("authorization", "Bearer anything")], [("authorization", "Bearer \(TestKeys.engineering)")]]
            for headers in variants {
                let a = try await admin.send(.GET, "/admin/api/keys", headers: headers)
                XCTAssertEqual(a.status, 503, a.body)
                XCTAssertEqual(a.errorCode, "admin_disabled", a.body)
            }
            let metrics = try await admin.send(.GET, "/metrics")
            XCTAssertEqual(metrics.status, 200, "the rest of the control plane is up")
        }
    }
}
