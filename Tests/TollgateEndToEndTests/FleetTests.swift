import Foundation
import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateTestSupport
import XCTest

/// Issue 16: several replicas on one Redis are one gateway. Three `tollgate serve` processes
/// (the real binary), one Redis, one configuration and admin key, a ledger each.
final class FleetTests: XCTestCase {
    /// A department limited to 600 requests a minute sends 4,500 requests over the three
    /// replicas at once, from 90 concurrent clients: the fleet admits at most 1.05 × 600 (the
    /// documented bound is 600 + 3 × one 1% slice = 618), and no fewer than 85% (no slice
    /// sits unused while the others refuse). The merged report counts every request once.
    func testALimitIsTheLimitAcrossThreeReplicas() async throws {
        // The test must fit in one calendar minute.
        let intoMinute = Int64(Date().timeIntervalSince1970 * 1000) % 60_000
        if intoMinute > 35_000 { try await Task.sleep(for: .milliseconds(60_000 - intoMinute + 200)) }
        let fleet = try await FleetHarness.start(requestsPerMinute: 600)
        do {
            let total = 4_500, clientsPerReplica = 30
            let perClient = total / (3 * clientsPerReplica)
            let started = ContinuousClock.now
            let statuses = try await withThrowingTaskGroup(of: [Int].self) { tasks in
                for replica in fleet.replicas {
                    for c in 0..<clientsPerReplica {
                        tasks.addTask {
                            let client = try await fleet.data(replica)
                            var seen: [Int] = []
                            for i in 0..<perClient {
                                let a = try await client.chat(key: FleetHarness.engineeringKey, content: "\(replica.name)-\(c)-\(i)",
                                                              extra: #","max_tokens":4"#)
                                seen.append(a.status)
                            }
                            await client.close()
                            return seen
                        }
                    }
                }
                var all: [Int] = []
                for try await part in tasks { all += part }
                return all
            }
            let elapsed = ContinuousClock.now - started
            let admitted = statuses.filter { $0 == 200 }.count
            let refused = statuses.filter { $0 == 429 }.count
            XCTAssertEqual(admitted + refused, total, "only 200 and 429: \(Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count))")
            print("fleet lease: \(admitted) of \(total) admitted against a limit of 600 (\(String(format: "%.3f", Double(admitted) / 600))×) in \(elapsed)")
            XCTAssertLessThanOrEqual(admitted, 630, "≤ 1.05 × the limit")
            // Measured 0.95–0.98 × here: a replica keeps at most one slice when the window is
            // spent, and a lease reply lost to a command timeout strands its slice. The bound
            // leaves room for a loaded machine.
            XCTAssertGreaterThanOrEqual(admitted, 510, "the leases do not starve the fleet")

            // Exact figures: the three ledgers merged by `tollgate report`. The replicas' loops
            // hand rows over every 100 ms and their writers commit behind them: read until every
            // row is there, for up to 15 s (a fixed 600 ms wait saw 1,622 of 4,500 on a loaded
            // machine). A row that never comes fails below.
            var arguments = ["report", "--format", "json", "--department", "engineering", "--migrations",
                             FleetHarness.repository.appendingPathComponent("migrations").path]
            for r in fleet.replicas { arguments += ["--database", r.database] }
            var report = try await runProcess(FleetHarness.executable, arguments)
            func requests(in report: (status: Int32, out: String, err: String)) -> Int? {
                let rows = (try? JSONSerialization.jsonObject(with: Data(report.out.utf8))) as? [[String: Any]]
                return rows?.first { $0["department"] as? String == "engineering" }?["requests"] as? Int
            }
            let deadline = ContinuousClock.now + .seconds(15)
            while requests(in: report) != total, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(250))
                report = try await runProcess(FleetHarness.executable, arguments)
            }
            XCTAssertEqual(report.status, 0, report.err)
            XCTAssertEqual(requests(in: report), total, report.out)
        } catch {
            await fleet.stop()
            throw error
        }
        await fleet.stop()
    }

    /// Keys, revocations, purges, reloads, sessions and the fleet view, each made on one
    /// replica and checked on the others.
    func testKeysRevocationsPurgesReloadsSessionsAndTheFleetView() async throws {
        let fleet = try await FleetHarness.start()
        do {
            let (r0, r1, r2) = (fleet.replicas[0], fleet.replicas[1], fleet.replicas[2])

            // 1. A key made on r0 works on r1 and r2 within a second; Redis holds its digest only.
            var a = try await fleet.adminCall(r0, .POST, "/admin/api/keys", body: #"{"department":"support","name":"fleet"}"#)
            XCTAssertEqual(a.status, 201, a.body)
            let key = try XCTUnwrap(a.json?["key"] as? String)
            let prefix = try XCTUnwrap((a.json?["info"] as? [String: Any])?["prefix"] as? String)
            let made = ContinuousClock.now
            for r in [r1, r2] {
                let works = await waitUntil(timeout: .seconds(1)) { (try? await fleet.chat(r, key: key).status) == 200 }
                XCTAssertTrue(works, "the key made on r0 works on \(r.name) within 1 s")
            }
            print("fleet keys: a key made on r0 worked on r1 and r2 after \(ContinuousClock.now - made)")
            let stored = try await fleet.redisCLI(["HGETALL", FleetKeyRecord.registryKey])
            XCTAssertTrue(stored.contains(KeyDigest.hex(of: key)), stored)
            XCTAssertFalse(stored.contains(key), "never the key itself in Redis")

            // A key made with the command line on r1's ledger while it runs reaches the others too.
            let cli = try await runProcess(FleetHarness.executable, [
                "keys", "create", "--config", fleet.configPath, "--department", "support", "--name", "cli", "--database", r1.database,
                "--migrations", FleetHarness.repository.appendingPathComponent("migrations").path])
            XCTAssertEqual(cli.status, 0, cli.err)
            let cliKey = String(cli.out.split(separator: "\n").last ?? "")
            let cliWorks = await waitUntil(timeout: .seconds(3)) { (try? await fleet.chat(r2, key: cliKey).status) == 200 }
            XCTAssertTrue(cliWorks, "a key made by `tollgate keys create` on r1's ledger works on r2 (r1 publishes it within its 1 s poll)")

            // 2. Revoked on r2: refused there before the answer, on r0 and r1 within a second.
            a = try await fleet.adminCall(r2, .DELETE, "/admin/api/keys/\(prefix)")
            XCTAssertEqual(a.status, 200, a.body)
            let revoked = ContinuousClock.now
            let onR2 = try await fleet.chat(r2, key: key).status
            XCTAssertEqual(onR2, 401, "in force on r2 before its answer")
            for r in [r0, r1] {
                let refused = await waitUntil(timeout: .seconds(1)) { (try? await fleet.chat(r, key: key).status) == 401 }
                XCTAssertTrue(refused, "revoked on r2, refused on \(r.name) within 1 s")
            }
            print("fleet keys: a key revoked on r2 was refused on r0 and r1 after \(ContinuousClock.now - revoked)")

            // 3. A purge on r0 empties r1's in-memory tier at once (not after its 2 s lifetime).
            let body = #","temperature":0"#
            a = try await fleet.chat(r0, key: FleetHarness.supportKey, content: "cache me", extra: body)
            XCTAssertEqual(a.headers.first(name: "x-cache"), "MISS")
            let hitOnR1 = await waitUntil(timeout: .seconds(2)) {
                (try? await fleet.chat(r1, key: FleetHarness.supportKey, content: "cache me", extra: body).headers.first(name: "x-cache")) == "HIT"
            }
            XCTAssertTrue(hitOnR1, "the answer stored by r0 is a hit on r1 (now also in r1's in-memory tier)")
            let inTier = ContinuousClock.now
            a = try await fleet.adminCall(r0, .DELETE, "/admin/api/cache")
            XCTAssertEqual(a.status, 200, a.body)
            let missOnR1 = await waitUntil(timeout: .milliseconds(1_000)) {
                (try? await fleet.chat(r1, key: FleetHarness.supportKey, content: "cache me", extra: body).headers.first(name: "x-cache")) == "MISS"
            }
            XCTAssertTrue(missOnR1, "purged on r0: a miss on r1")
            XCTAssertLessThan(ContinuousClock.now - inTier, .milliseconds(2_000), "before r1's in-memory copy would have expired by itself")

            // 4. Sessions: a login on r0 opens r1 and r2; a logout on r1 ends it on all three.
            let login = try await fleet.admin(r0)
            let encoded = FleetHarness.adminKey.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
            a = try await login.send(.POST, "/admin/login", body: "key=\(encoded)", headers: [("content-type", "application/x-www-form-urlencoded")])
            await login.close()
            XCTAssertEqual(a.status, 303, a.body)
            let cookie = String(try XCTUnwrap(a.headers.first(name: "set-cookie")).split(separator: ";")[0])
            for r in [r1, r2] {
                a = try await fleet.get(r, "/admin/api/keys", headers: [("cookie", cookie)])
                XCTAssertEqual(a.status, 200, "the session opened on r0 works on \(r.name): \(a.body)")
            }
            let logout = try await fleet.admin(r1)
            a = try await logout.send(.POST, "/admin/logout", headers: [
                ("cookie", cookie), ("host", "127.0.0.1:\(r1.adminPort)"), ("origin", "http://127.0.0.1:\(r1.adminPort)")])
            await logout.close()
            XCTAssertEqual(a.status, 303, a.body)
            for r in [r0, r1, r2] {
                let ended = await waitUntil(timeout: .seconds(1)) {
                    (try? await fleet.get(r, "/admin/api/keys", headers: [("cookie", cookie)]).status) == 401
                }
                XCTAssertTrue(ended, "logged out on r1: the cookie is refused on \(r.name)")
            }

            // Redis is outside the gateway: a malformed event and a malformed registry entry are
            // dropped and counted, and every replica goes on serving.
            _ = try await fleet.redisCLI(["PUBLISH", FleetEvent.channel, "tg1 intruder purge \u{1}"])
            _ = try await fleet.redisCLI(["PUBLISH", FleetEvent.channel, String(repeating: "x", count: 4_000)])
            _ = try await fleet.redisCLI(["HSET", FleetKeyRecord.registryKey, "tg-bogus", #"{"sha256":"zz","prefix":"tg-bogus"}"#])
            for r in [r0, r1, r2] {
                let counted = await waitUntil(timeout: .seconds(3)) {
                    guard let m = try? await fleet.get(r, "/metrics").body else { return false }
                    return m.contains("tollgate_fleet_events_dropped_total 2") && !m.contains("tollgate_fleet_key_records_refused_total 0")
                }
                XCTAssertTrue(counted, "\(r.name) dropped both messages and refused the entry")
                let served = try await fleet.chat(r, key: FleetHarness.supportKey, content: "still here")
                XCTAssertEqual(served.status, 200)
            }
            _ = try await fleet.redisCLI(["HDEL", FleetKeyRecord.registryKey, "tg-bogus"])

            // 5. A reload with fleet=1 on r0 reloads all three.
            func generation(_ r: FleetHarness.Replica) async -> Int? {
                (try? await fleet.get(r, "/healthz"))?.json?["generation"] as? Int
            }
            let before = await [generation(r0), generation(r1), generation(r2)]
            a = try await fleet.adminCall(r0, .POST, "/admin/api/reload?fleet=1")
            XCTAssertEqual(a.status, 200, a.body)
            for (i, r) in [r0, r1, r2].enumerated() {
                let reloaded = await waitUntil(timeout: .seconds(1)) { await generation(r) ?? 0 > before[i] ?? .max }
                XCTAssertTrue(reloaded, "\(r.name) reloaded")
            }

            // 6. The fleet view: any replica shows every replica's requests, from the rollups, as
            // many as the three ledgers hold (merged by `tollgate report`).
            for r in [r0, r1, r2] { _ = try await fleet.chat(r, key: FleetHarness.supportKey, content: "view \(r.name)") }
            var overview: [String: Any]?
            var ledgers = -1
            let complete = await waitUntil(timeout: .seconds(10), every: .milliseconds(250)) {
                overview = try? await fleet.get(r2, "/admin/api/overview", headers: [("authorization", "Bearer \(FleetHarness.adminKey)")]).json
                let fleetSection = overview?["fleet"] as? [String: Any]
                let names = (fleetSection?["replicas"] as? [[String: Any]])?.compactMap { $0["name"] as? String }
                let total = (fleetSection?["total"] as? [String: Any])?["requests"] as? Int
                ledgers = (try? await fleet.mergedRequests()) ?? -1
                return Set(names ?? []) == ["r0", "r1", "r2"] && total == ledgers
            }
            XCTAssertTrue(complete, "the fleet view names r0, r1 and r2 and counts the ledgers' \(ledgers) rows: \(String(describing: overview?["fleet"]))")
            XCTAssertEqual(overview?["replica"] as? String, "r2", "the rest of the overview is labelled as r2's")
            let fleetSection = overview?["fleet"] as? [String: Any]
            let total = (fleetSection?["total"] as? [String: Any])?["requests"] as? Int ?? 0
            let perReplica = (fleetSection?["replicas"] as? [[String: Any]] ?? []).reduce(0) { $0 + ($1["requests"] as? Int ?? 0) }
            XCTAssertEqual(total, perReplica)
            XCTAssertGreaterThanOrEqual(total, 8, "every authenticated request above, on every replica")
            // The page, with a fresh session opened on r1 and shown by r0: the fleet, labelled.
            let again = try await fleet.admin(r1)
            a = try await again.send(.POST, "/admin/login", body: "key=\(encoded)", headers: [("content-type", "application/x-www-form-urlencoded")])
            await again.close()
            let fresh = String(try XCTUnwrap(a.headers.first(name: "set-cookie")).split(separator: ";")[0])
            let html = try await fleet.get(r0, "/admin", headers: [("cookie", fresh)])
            XCTAssertEqual(html.status, 200)
            XCTAssertTrue(html.body.contains("Fleet — all replicas"), html.body)
            for name in ["r0", "r1", "r2"] { XCTAssertTrue(html.body.contains("data-fleet-replica=\"\(name)\""), name) }
            XCTAssertTrue(html.body.contains("Below: this replica (r0)"))
            let page = try await fleet.get(r1, "/admin", headers: [("cookie", cookie)])
            XCTAssertEqual(page.status, 303, "that session ended")
        } catch {
            await fleet.stop()
            throw error
        }
        await fleet.stop()
    }
}
