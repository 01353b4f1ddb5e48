import Foundation
import TollgateCore
import XCTest

final class ConfigurationTests: XCTestCase {
    static let minimal = """
        pools:
          - name: qwen
            models: [qwen2.5-0.5b-instruct]
            instances:
              - {name: a, url: "http://127.0.0.1:9001", labels: {gpu: 0}}
        """

    /// The repository's example configuration, as `tollgate serve` reads it.
    var routesDirectory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("routes").path
    }

    func errors(_ yaml: String) -> [ConfigurationError] {
        do {
            _ = try ConfigurationLoader.parse(yaml, file: "test.yaml")
            XCTFail("expected an error")
            return []
        } catch let e as ConfigurationErrors {
            return e.errors
        } catch {
            XCTFail("unexpected \(error)")
            return []
        }
    }

    func testDefaults() throws {
        let c = try ConfigurationLoader.parse(Self.minimal)
        XCTAssertEqual(c.listen, ListenAddress(host: "127.0.0.1", port: 8080))
        XCTAssertEqual(c.admin, ListenAddress(host: "127.0.0.1", port: 8081))
        XCTAssertEqual(c.limits.maxBodyBytes, 10 * 1024 * 1024)
        XCTAssertEqual(c.health.maxFails, 3)
        XCTAssertEqual(c.health.failTimeout, .seconds(30))
        XCTAssertEqual(c.retry.attempts, 3)
        XCTAssertEqual(c.pools[0].policy, .roundRobin)
        XCTAssertEqual(c.pools[0].instances[0].labels, ["gpu": "0"])
        XCTAssertEqual(c.pools[0].instances[0].url, UpstreamURL(host: "127.0.0.1", port: 9001))
    }

    func testExampleRoutesReproduceTheOriginalSetUp() throws {
        let c = try ConfigurationLoader.load(path: routesDirectory)
        XCTAssertEqual(c.pools.count, 1)
        let instances = c.pools[0].instances
        XCTAssertEqual(instances.map(\.url.port), Array(8001...8008))
        XCTAssertEqual(instances.map { $0.labels["gpu"]! }, ["0", "1", "2", "3", "0", "1", "2", "3"])
        let table = RoutingTable(configuration: c)
        let cs = table.departments[table.department(named: "customer-service")!]
        let total = cs.candidates[0].reduce(0) { $0 + $1.weight }
        let gpu0 = cs.candidates[0].filter { ["qwen-0", "qwen-4"].contains(table.instances[$0.instance].name) }.reduce(0) { $0 + $1.weight }
        XCTAssertEqual(Double(gpu0) / Double(total), 0.75, accuracy: 1e-9, "customer-service sends 3/4 of its traffic to GPU0")
    }

    func testDurations() throws {
        let c = try ConfigurationLoader.parse(Self.minimal + "\ntimeouts: {connect: 250ms, per_try: 1.5s, request: 2m}\n")
        XCTAssertEqual(c.timeouts.connect, .milliseconds(250))
        XCTAssertEqual(c.timeouts.perTry, .milliseconds(1500))
        XCTAssertEqual(c.timeouts.request, .seconds(120))
    }

    /// Found by fuzzing (Tests/Fuzz/regressions/Configuration/huge-duration): a duration longer
    /// than Int64 nanoseconds hold trapped converting to Int64 instead of being a config error.
    func testDurationPastInt64NanosecondsIsAnError() {
        XCTAssertNil(parseDuration("10000000000s"))
        XCTAssertNil(parseDuration("1e300ms"))
        XCTAssertNil(parseDuration("3000000h"))
        XCTAssertNil(parseDuration("9000000000s"), "over 10^9 s: refused before the nanoseconds")
        XCTAssertEqual(parseDuration("900000000s"), .seconds(900_000_000))
        XCTAssertThrowsError(try ConfigurationLoader.parse(Self.minimal + "\ntimeouts: {connect: 10000000000s}\n"))
    }

    func testRedisTimeouts() throws {
        let c = try ConfigurationLoader.parse(Self.minimal + "\nredis: {connect_timeout: 1s, command_timeout: 100ms}\n")
        XCTAssertEqual(c.redis.connect, .seconds(1))
        XCTAssertEqual(c.redis.command, .milliseconds(100))
        XCTAssertEqual(try ConfigurationLoader.parse(Self.minimal).redis, RedisTimeouts())
    }

    func testUnknownKeysAreErrorsNamingFileAndKey() {
        let e = errors(Self.minimal + "\nhealth: {max_fail: 3}\n")
        XCTAssertEqual(e.count, 1)
        XCTAssertEqual(e[0].file, "test.yaml")
        XCTAssertEqual(e[0].key, "health.max_fail")
        XCTAssertEqual(e[0].message, "unknown key")
        XCTAssertEqual(e[0].line, 6)
        XCTAssertTrue(e[0].description.hasPrefix("test.yaml:6: health.max_fail: unknown key"), e[0].description)
    }

    /// An instance's key is sent as an `Authorization` header as written: a line break or a
    /// space in it is refused when the configuration is read, not at the first request.
    func testInstanceAPIKeyMustBeAHeaderValue() {
        let e = errors("""
            pools:
              - name: qwen
                models: [m]
                instances:
                  - {name: a, url: "http://127.0.0.1:9001", api_key: "sk-1\\r\\nx-evil: 1"}
                  - {name: b, url: "http://127.0.0.1:9002", api_key: "two words"}
                  - {name: c, url: "http://127.0.0.1:9003", api_key: "sk-fine"}
            """)
        XCTAssertEqual(e.map(\.key), ["pools[0].instances[0].api_key", "pools[0].instances[1].api_key"])
    }

    func testUnknownKeyInsideAnInstance() {
        let e = errors("""
            pools:
              - name: qwen
                models: [m]
                instances:
                  - {name: a, url: "http://127.0.0.1:9001", wieght: 2}
            """)
        XCTAssertEqual(e.map(\.key), ["pools[0].instances[0].wieght"])
    }

    func testBadValues() {
        let e = errors("""
            listen: {port: 70000}
            retry: {attempts: 0}
            timeouts: {connect: soon}
            pools:
              - name: qwen
                models: [m]
                policy: random
                instances:
                  - {name: a, url: "https://x:1"}
                  - {name: b, url: "http://127.0.0.1:9002", weight: -1}
            """)
        let keys = Set(e.map(\.key))
        XCTAssertEqual(keys, ["listen.port", "retry.attempts", "timeouts.connect", "pools[0].policy", "pools[0].instances[0].url", "pools[0].instances[1].weight"])
        XCTAssertTrue(e.first { $0.key == "pools[0].policy" }!.message.contains("round_robin, least_in_flight"))
    }

    /// Every number in the file is parsed into a bounded range: a huge duration or count is
    /// a refused entry naming its key, never a trap (a trap on SIGHUP would stop every
    /// department's traffic).
    func testHugeNumbersAreRefusedNotTrapped() {
        let e = errors("""
            shutdown_grace: 1e300s
            limits: {max_body_bytes: 9223372036854775807, max_header_count: 9223372036854775807, header_timeout: 99999999999999h}
            timeouts: {connect: 9000h, per_try: 1e19ms, request: 1e300}
            health: {max_fails: 9223372036854775807, unhealthy_threshold: 9223372036854775807}
            cache: {ttl: 9e18s, max_entry_bytes: 9223372036854775807}
            quotas: {default_max_tokens: 9223372036854775807, sync_interval: 1e30s}
            pools:
              - name: qwen
                models: [m]
                instances:
                  - {name: a, url: "http://127.0.0.1:9001", max_in_flight: 9223372036854775807}
            departments:
              - name: d
                quota: {requests_per_minute: 9223372036854775807, tokens_per_minute: 9223372036854775807,
                        tokens_per_day: 9223372036854775807, tokens_per_month: 9223372036854775807}
            """)
        XCTAssertEqual(Set(e.map(\.key)), [
            "shutdown_grace", "limits.max_body_bytes", "limits.max_header_count", "limits.header_timeout",
            "timeouts.connect", "timeouts.per_try", "timeouts.request", "health.max_fails", "health.unhealthy_threshold",
            "cache.ttl", "cache.max_entry_bytes", "quotas.default_max_tokens", "quotas.sync_interval",
            "pools[0].instances[0].max_in_flight", "departments[0].quota.requests_per_minute",
            "departments[0].quota.tokens_per_minute", "departments[0].quota.tokens_per_day",
            "departments[0].quota.tokens_per_month",
        ])
        XCTAssertTrue(e.first { $0.key == "timeouts.connect" }!.message.contains("at most 8760h"), "\(e)")
        XCTAssertTrue(e.first { $0.key == "departments[0].quota.tokens_per_month" }!.message.contains("between 1 and"), "\(e)")
    }

    func testLedgerLimits() throws {
        XCTAssertEqual(try ConfigurationLoader.parse(Self.minimal).ledger, LedgerLimits())
        let c = try ConfigurationLoader.parse(Self.minimal + "\nledger: {max_backlog: 5000, close_timeout: 5s, max_concurrent_reports: 2}\n")
        XCTAssertEqual(c.ledger.maxBacklog, 5000)
        XCTAssertEqual(c.ledger.closeTimeout, .seconds(5))
        XCTAssertEqual(c.ledger.maxConcurrentReports, 2)
        let e = errors(Self.minimal + "\nledger: {max_backlog: 10, close_timeout: 1e30s, max_concurrent_reports: 0, other: 1}\n")
        XCTAssertEqual(Set(e.map(\.key)), ["ledger.max_backlog", "ledger.close_timeout", "ledger.max_concurrent_reports", "ledger.other"])
    }

    func testDurationParsingIsBounded() {
        XCTAssertNil(parseDuration("1e300s"))
        XCTAssertNil(parseDuration("nan"))
        XCTAssertNil(parseDuration("inf"))
        XCTAssertNil(parseDuration("-1s"))
        XCTAssertEqual(parseDuration("366d"), nil, "no day unit in configuration durations")
        XCTAssertEqual(parseDuration("8760h"), .seconds(8760 * 3600))
        XCTAssertNil(parseDuration("1e10"), "beyond 10^9 seconds a duration would not fit Duration's nanoseconds")
        XCTAssertEqual(parseDuration("9000h"), .seconds(9000 * 3600), "parsed; the reader refuses it as longer than a year")
    }

    func testRestartRequiredNamesWhatAReloadCannotApply() throws {
        let running = try ConfigurationLoader.parse(Self.minimal)
        XCTAssertEqual(running.restartRequired(toApply: running), [])
        let loaded = try ConfigurationLoader.parse(Self.minimal + """

            listen: {port: 9090}
            admin: {host: 0.0.0.0}
            event_loops: 3
            redis: {connect_timeout: 1s, command_timeout: 1s}
            quotas: {sync_interval: 1s}
            ledger: {max_backlog: 5000}
            retry: {attempts: 2}
            limits: {max_body_bytes: 100}
            """)
        XCTAssertEqual(running.restartRequired(toApply: loaded),
                       ["listen", "admin", "event_loops", "redis.connect_timeout", "redis.command_timeout", "quotas.sync_interval",
                        "ledger.max_backlog"])
    }

    func testPromptPreviewIsASettingGlobalAndPerDepartment() throws {
        XCTAssertEqual(try ConfigurationLoader.parse(Self.minimal).promptPreview, .characters(120), "on by default, as before")
        let c = try ConfigurationLoader.parse(Self.minimal + """

            prompt_preview: 40
            departments:
              - {name: legal, prompt_preview: off}
              - {name: support, prompt_preview: 200}
              - {name: engineering}
            """)
        XCTAssertEqual(c.promptPreview, .characters(40))
        XCTAssertEqual(c.promptPreview(forDepartment: "legal"), .off)
        XCTAssertEqual(c.promptPreview(forDepartment: "support"), .characters(200))
        XCTAssertEqual(c.promptPreview(forDepartment: "engineering"), .characters(40))
        XCTAssertEqual(c.promptPreview(forDepartment: "unknown"), .characters(40))
        XCTAssertEqual(try ConfigurationLoader.parse(Self.minimal + "\nprompt_preview: off\n").promptPreview, .off)
        XCTAssertEqual(try ConfigurationLoader.parse(Self.minimal + "\nprompt_preview: false\n").promptPreview, .off)

        let e = errors(Self.minimal + """

            prompt_preview: 0
            departments:
              - {name: a, prompt_preview: 1001}
              - {name: b, prompt_preview: lots}
              - {name: c, prompt_preview: -5}
            """)
        XCTAssertEqual(Set(e.map(\.key)), ["prompt_preview", "departments[0].prompt_preview", "departments[1].prompt_preview", "departments[2].prompt_preview"])
        XCTAssertTrue(e[0].message.contains("off or a number of characters between 1 and 1000"), e[0].message)
    }

    func testPromptPrivacyPreview() {
        let text = String(repeating: "é", count: 300)
        XCTAssertEqual(PromptPrivacy.preview(text, policy: .standard)?.count, 120)
        XCTAssertEqual(PromptPrivacy.preview(text, policy: .characters(7)), String(repeating: "é", count: 7))
        XCTAssertNil(PromptPrivacy.preview(text, policy: .off))
        XCTAssertNil(PromptPrivacy.preview("", policy: .standard))
        XCTAssertEqual(PromptPrivacy.preview("short", policy: .characters(500)), "short")
        XCTAssertEqual(PromptPrivacy.preview(String(repeating: "x", count: 5000), policy: .characters(Int.max))?.count, PromptPrivacy.maxLength)
        XCTAssertNil(PromptPrivacy.preview("x", policy: .characters(0)))
        XCTAssertNil(PromptPrivacy.preview("x", policy: .characters(-1)))
        // Grapheme clusters are never cut in half.
        XCTAssertEqual(PromptPrivacy.preview("👩‍👩‍👧‍👦abc", policy: .characters(1)), "👩‍👩‍👧‍👦")
    }

    func testCrossChecks() {
        let e = errors("""
            pools:
              - name: qwen
                models: [m]
                instances:
                  - {name: a, url: "http://127.0.0.1:9001", labels: {gpu: "0"}}
                  - {name: a, url: "http://127.0.0.1:9002", labels: {gpu: "1"}}
            departments:
              - name: cs
                keys: [{sha256: nothex}]
                route: [{match: {gpu: "7"}, weight: 1}]
              - name: cs
            auth: {anonymous_department: nobody}
            """)
        let messages = e.map { "\($0.key): \($0.message)" }
        XCTAssertTrue(messages.contains("pools[0].instances[1].name: duplicate instance name \"a\""), "\(messages)")
        XCTAssertTrue(messages.contains("departments[0].keys[0].sha256: must be 64 lower-case hex digits (the SHA-256 of the key)"), "\(messages)")
        XCTAssertTrue(messages.contains("departments[0].route: no route group matches any instance of pool \"qwen\""), "\(messages)")
        XCTAssertTrue(messages.contains("departments[2].name: duplicate department \"cs\"") || messages.contains("departments[1].name: duplicate department \"cs\""), "\(messages)")
        XCTAssertTrue(messages.contains("auth.anonymous_department: no department named \"nobody\""), "\(messages)")
    }

    func testMissingPoolsAndWrongShapes() {
        XCTAssertEqual(errors("listen: 8080\n").map(\.key), ["listen", "pools"].filter { $0 == "listen" })
        XCTAssertEqual(errors("event_loops: 2\n").map(\.message), ["at least one pool with one instance is needed"])
        XCTAssertTrue(errors("pools: [\n").first!.message.hasPrefix("not valid YAML"))
    }

    func testDirectoryMergesFilesAndRefusesASectionTwice() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Self.minimal.write(to: dir.appendingPathComponent("a.yaml"), atomically: true, encoding: .utf8)
        try "departments:\n  - name: eng\nlisten: {port: 9000}\n".write(to: dir.appendingPathComponent("b.yaml"), atomically: true, encoding: .utf8)
        let c = try ConfigurationLoader.load(path: dir.path)
        XCTAssertEqual(c.departments.map(\.name), ["eng"])
        XCTAssertEqual(c.listen.port, 9000)
        try "listen: {port: 9001}\n".write(to: dir.appendingPathComponent("c.yaml"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ConfigurationLoader.load(path: dir.path)) { error in
            let e = (error as! ConfigurationErrors).errors
            XCTAssertEqual(e.map(\.key), ["listen"])
            XCTAssertTrue(e[0].file.hasSuffix("c.yaml"))
            XCTAssertTrue(e[0].message.hasPrefix("already set in"))
        }
    }

    func testUpstreamURLParsing() {
        XCTAssertEqual(UpstreamURL(parsing: "http://10.0.0.5:8001"), UpstreamURL(host: "10.0.0.5", port: 8001))
        XCTAssertEqual(UpstreamURL(parsing: "http://gpu-box/vllm/"), UpstreamURL(host: "gpu-box", port: 80, basePath: "/vllm"))
        XCTAssertEqual(UpstreamURL(parsing: "http://[::1]:8001")?.hostHeader, "[::1]:8001")
        XCTAssertNil(UpstreamURL(parsing: "https://x:1"))
        XCTAssertNil(UpstreamURL(parsing: "http://x:0"))
        XCTAssertNil(UpstreamURL(parsing: "http://:80"))
        XCTAssertNil(UpstreamURL(parsing: "http://user@x:80"))
    }
}

final class RoutingTableTests: XCTestCase {
    func table(_ yaml: String) throws -> RoutingTable {
        RoutingTable(configuration: try ConfigurationLoader.parse(yaml))
    }

    func shares(_ t: RoutingTable, _ department: String) -> [String: Double] {
        let d = t.departments[t.department(named: department)!]
        let total = Double(d.candidates[0].reduce(0) { $0 + $1.weight })
        var out: [String: Double] = [:]
        for c in d.candidates[0] { out[t.instances[c.instance].name] = Double(c.weight) / total }
        return out
    }

    let pool = """
        pools:
          - name: p
            models: [m, m-alias]
            instances:
              - {name: a, url: "http://127.0.0.1:9001", labels: {gpu: "0"}}
              - {name: b, url: "http://127.0.0.1:9002", labels: {gpu: "0"}, weight: 3}
              - {name: c, url: "http://127.0.0.1:9003", labels: {gpu: "1"}}
        """

    func testGroupSharesSplitByInstanceWeight() throws {
        let t = try table(pool + """

            departments:
              - name: d
                route:
                  - {match: {gpu: "0"}, weight: 1}
                  - {match: {gpu: "1"}, weight: 1}
            """)
        let s = shares(t, "d")
        XCTAssertEqual(s["a"]!, 0.125, accuracy: 1e-9)
        XCTAssertEqual(s["b"]!, 0.375, accuracy: 1e-9)
        XCTAssertEqual(s["c"]!, 0.5, accuracy: 1e-9)
    }

    func testNoRouteMeansWholePoolByWeightAndUnmatchedInstancesAreUnused() throws {
        let t = try table(pool + """

            departments:
              - name: all
              - name: only-gpu1
                route: [{match: {gpu: "1"}, weight: 5}]
            """)
        XCTAssertEqual(shares(t, "all"), ["a": 0.2, "b": 0.6, "c": 0.2])
        XCTAssertEqual(shares(t, "only-gpu1"), ["c": 1.0])
        XCTAssertEqual(t.pool(forModel: "m-alias"), 0)
        XCTAssertNil(t.pool(forModel: "gpt-4"))
    }

    func testKeysResolveByDigest() throws {
        let hex = KeyDigest.hex(of: "tg-secret")
        let t = try table(pool + "\ndepartments:\n  - name: d\n    keys: [{sha256: \(hex)}]\n")
        XCTAssertEqual(t.department(forKey: KeyDigest(hashing: Array("tg-secret".utf8))), 0)
        XCTAssertNil(t.department(forKey: KeyDigest(hashing: Array("tg-secreT".utf8))))
    }

    func testKeyDigestMatchesSHA256() {
        XCTAssertEqual(KeyDigest.hex(of: "abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(KeyDigest(hex: KeyDigest.hex(of: "abc")), KeyDigest(hashing: Array("abc".utf8)))
        XCTAssertNil(KeyDigest(hex: "XYZ"))
    }
}
