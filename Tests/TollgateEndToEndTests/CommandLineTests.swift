import Foundation
import GRDB
import NIOCore
import NIOHTTP1
import NIOPosix
import TollgateCore
import TollgateLedger
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// The `tollgate` executable itself: `check`, and `serve` with SIGHUP reload and SIGTERM drain.
final class CommandLineTests: XCTestCase {
    /// The executable sits next to the test bundle in the build folder.
    var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("tollgate")
    }

    var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    func run(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    func testCheckPrintsTheResolvedTable() throws {
        let r = try run(["check", "--config", repository.appendingPathComponent("routes").path])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("qwen-0  http://127.0.0.1:8001"), r.out)
        XCTAssertTrue(r.out.contains("customer-service (1 key)"), r.out)
        XCTAssertTrue(r.out.contains("qwen: qwen-0 37.5%"), r.out)
    }

    func testCheckNamesFileKeyAndProblem() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("bad.yaml")
        try "pools:\n  - name: p\n    models: [m]\n    instances:\n      - {name: a, url: \"ftp://x\"}\n".write(to: file, atomically: true, encoding: .utf8)
        let r = try run(["check", "--config", file.path])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("\(file.path):5: pools[0].instances[0].url: \"ftp://x\" is not an http://host:port URL"), r.err)
    }

    func testServeReloadsOnSIGHUPAndDrainsOnSIGTERM() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var slow = SimulatorConfiguration()
        slow.tokensPerSecond = 10
        let sim = try await SimulatedInstance.start(name: "s", port: 0, gpu: "0", configuration: slow, group: group)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-serve-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func config(department: String) -> String {
            """
            listen: {host: 127.0.0.1, port: 0}
            admin: {host: 127.0.0.1, port: 0}
            shutdown_grace: 10s
            pools:
              - {name: p, models: [qwen2.5-0.5b-instruct], instances: [{name: s, url: "http://127.0.0.1:\(sim.port)"}]}
            departments:
              - {name: \(department), keys: [{sha256: \(KeyDigest.hex(of: TestKeys.engineering))}]}
            """
        }
        try config(department: "before").write(to: dir.appendingPathComponent("g.yaml"), atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = executable
        process.arguments = ["serve", "--config", dir.path, "--database", dir.appendingPathComponent("ledger.sqlite").path,
                             "--migrations", repository.appendingPathComponent("migrations").path]
        let output = ProcessOutput(process)
        try process.run()
        defer { if process.isRunning { process.terminate() } }

        // The gateway binds port 0 and says which port it got.
        let port = try await output.listeningPort()
        let c = try await HTTPTestClient.connect(port: port, group: group)
        let first = try await c.chat(key: TestKeys.engineering, extra: #","max_tokens":1"#)
        XCTAssertEqual(first.status, 200)

        try config(department: "after").write(to: dir.appendingPathComponent("g.yaml"), atomically: true, encoding: .utf8)
        kill(process.processIdentifier, SIGHUP)
        try await output.waitFor("configuration reloaded")

        // SIGTERM while a 1-second stream is in flight: the stream completes, then exit 0.
        let streaming = try await HTTPTestClient.connect(port: port, group: group)
        let inFlight = Task { try await streaming.chat(key: TestKeys.engineering, extra: #","max_tokens":10"#, stream: true) }
        try await Task.sleep(for: .milliseconds(200))
        kill(process.processIdentifier, SIGTERM)
        let answer = try await inFlight.value
        XCTAssertEqual(answer.status, 200)
        XCTAssertEqual(answer.events.last, "[DONE]")
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        let log = output.text
        XCTAssertTrue(log.contains("configuration reloaded"), log)
        XCTAssertTrue(log.contains("department=after"), "requests after SIGHUP are accounted to the reloaded department: \(log)")
        await c.close()
        await streaming.close()
        try await sim.stop()
        try await group.shutdownGracefully()
    }

    /// SIGTERM in the middle of a load: every request that got an answer has its row, and
    /// every generation an instance ran is accounted for.
    func testSIGTERMUnderLoadLosesNoRow() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var sim = SimulatorConfiguration()
        sim.timeToFirstToken = .milliseconds(10)
        let instance = try await SimulatedInstance.start(name: "s", port: 0, gpu: "0", configuration: sim, group: group)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-term-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try """
            listen: {host: 127.0.0.1, port: 0}
            admin: {host: 127.0.0.1, port: 0}
            shutdown_grace: 10s
            pools:
              - {name: p, models: [qwen2.5-0.5b-instruct], instances: [{name: s, url: "http://127.0.0.1:\(instance.port)"}]}
            departments:
              - {name: eng, keys: [{sha256: \(KeyDigest.hex(of: TestKeys.engineering))}]}
            """.write(to: dir.appendingPathComponent("g.yaml"), atomically: true, encoding: .utf8)
        let database = dir.appendingPathComponent("ledger.sqlite").path
        let process = Process()
        process.executableURL = executable
        process.arguments = ["serve", "--config", dir.path, "--database", database, "--log-level", "notice",
                             "--migrations", repository.appendingPathComponent("migrations").path]
        let output = ProcessOutput(process)
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        let port = try await output.listeningPort()

        let answered = Counter()
        let load = Task {
            await withTaskGroup(of: Void.self) { tasks in
                for _ in 0..<20 {
                    tasks.addTask {
                        guard let client = try? await HTTPTestClient.connect(port: port, group: group) else { return }
                        for _ in 0..<1000 {
                            guard let answer = try? await client.chat(key: TestKeys.engineering, extra: #","max_tokens":3"#) else { break }
                            answered.add(answer.status == 200 ? 1 : 0)
                            if answer.headers.first(name: "connection") == "close" { break }
                        }
                        await client.close()
                    }
                }
            }
        }
        // SIGTERM once the load is well under way (not after a fixed time: a slow machine may
        // not have answered anything yet).
        for _ in 0..<1000 where answered.value < 200 { try await Task.sleep(for: .milliseconds(10)) }
        kill(process.processIdentifier, SIGTERM)
        await load.value
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        let queue = try DatabaseQueue(path: database)
        let rows = try await queue.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM usage WHERE status = 200") ?? -1 }
        XCTAssertGreaterThan(answered.value, 100)
        XCTAssertEqual(rows, answered.value, "one row per answered request")
        XCTAssertEqual(rows, instance.stats.generations, "one row per generation the instance ran")
        try await instance.stop()
        try await group.shutdownGracefully()
    }

    /// `tollgate report` merges several replicas' ledgers and shows the monthly quota used.
    func testReportMergesLedgersAndShowsQuota() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-report-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let migrations = try MigrationLoader.load(directory: repository.appendingPathComponent("migrations").path)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        for (n, replica) in ["a", "b"].enumerated() {
            let db = try LedgerDatabase.open(path: dir.appendingPathComponent("\(replica).sqlite").path, migrations: migrations)
            let writer = UsageWriter(database: db)
            writer.submit((0..<(10 * (n + 1))).map { i in
                UsageRecord(timeMs: now - Int64(i), requestID: "\(replica)-\(i)", department: "eng", endpoint: "chat", instance: "s",
                            status: i == 0 ? 502 : 200, promptTokens: 10, completionTokens: 5, latencyMs: Double(i), cache: .off, stream: false)
            })
            await writer.close()
        }
        try "pools: [{name: p, models: [m], instances: [{name: s, url: \"http://127.0.0.1:1\"}]}]\ndepartments: [{name: eng, quota: {tokens_per_month: 900}}]\n"
            .write(to: dir.appendingPathComponent("g.yaml"), atomically: true, encoding: .utf8)
        let r = try run(["report", "--format", "json", "--config", dir.appendingPathComponent("g.yaml").path,
                         "--database", dir.appendingPathComponent("a.sqlite").path, "--database", dir.appendingPathComponent("b.sqlite").path,
                         "--migrations", repository.appendingPathComponent("migrations").path])
        XCTAssertEqual(r.status, 0, r.err)
        let rows = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]], r.out)
        let eng = try XCTUnwrap(rows.first)
        XCTAssertEqual(eng["requests"] as? Int, 30)
        XCTAssertEqual(eng["errors"] as? Int, 2)
        XCTAssertEqual(eng["totalTokens"] as? Int ?? eng["total_tokens"] as? Int, 450)
        let percent = try XCTUnwrap((eng["quotaUsedPercent"] ?? eng["quota_used_percent"]) as? Double)
        XCTAssertEqual(percent, 50, accuracy: 0.001)
        let table = try run(["report", "--database", dir.appendingPathComponent("a.sqlite").path,
                             "--migrations", repository.appendingPathComponent("migrations").path, "--config", dir.appendingPathComponent("g.yaml").path])
        XCTAssertTrue(table.out.contains("eng"), table.out)
    }
}
