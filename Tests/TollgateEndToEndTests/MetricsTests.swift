import Foundation
import GRDB
import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateDataPlane
import TollgateLedger
import TollgateRedis
import TollgateServer
import TollgateSimulator
import TollgateTestSupport
import XCTest

/// `GET /metrics` on a running gateway with a ledger and Redis: it parses as Prometheus text
/// under a strict parser, and its counters match the traffic sent and the ledger.
final class MetricsTests: XCTestCase {
    func testMetricsParseAndMatchTheTraffic() async throws {
        var redis: RedisServer?
        do {
            redis = try RedisServer()
        } catch let skip as XCTSkip {
            // Metrics without Redis are still worth checking; scripts/test installs it.
            if ProcessInfo.processInfo.environment["TOLLGATE_TEST_STRICT"] == "1" { throw skip }
        }
        let h = try await AdminHarness.start(redis: redis?.url())
        do {
            try await check(h, redis: redis != nil)
        } catch {
            await h.stop()
            redis?.stop()
            throw error
        }
        await h.stop()
        redis?.stop()
    }

    private func check(_ h: AdminHarness, redis: Bool) async throws {
        let admin = try await h.admin()
        if redis {
            let up = await eventually { h.gateway.dataPlane.redis?.availableConnections == 2 }
            XCTAssertTrue(up, "both loops' Redis connections are up")
        }

        // Before any traffic the exposition is already complete and valid.
        var families = try PrometheusParser.parse(try await scrape(admin))
        XCTAssertEqual(families["tollgate_http_requests_total"]?.value(), 0)

        // Traffic: support 6 + 3 streams + 2 unknown model, engineering 4, interns 1 + 2 over
        // quota, 3 unknown keys.
        let data = try await h.data()
        for _ in 0..<6 { try await expect(200, data.chat(key: AdminHarness.supportKey)) }
        for _ in 0..<3 { try await expect(200, data.chat(key: AdminHarness.supportKey, stream: true)) }
        for _ in 0..<2 { try await expect(404, data.chat(key: AdminHarness.supportKey, model: "nope")) }
        for _ in 0..<4 { try await expect(200, data.chat(key: AdminHarness.engineeringKey)) }
        try await expect(200, data.chat(key: AdminHarness.internsKey))
        for _ in 0..<2 { try await expect(429, data.chat(key: AdminHarness.internsKey)) }
        for _ in 0..<3 { try await expect(401, data.chat(key: "tg-unknown")) }
        // The cache (with Redis): a miss, two hits, and a bypass asked for with no-cache.
        if redis {
            let deterministic = #","temperature":0"#
            let miss = try await data.chat(key: AdminHarness.supportKey, content: "ping", extra: deterministic)
            XCTAssertEqual(miss.headers.first(name: "x-cache"), "MISS")
            try await Task.sleep(for: .milliseconds(200))  // the store is off the response path
            for _ in 0..<2 {
                let hit = try await data.chat(key: AdminHarness.supportKey, content: "ping", extra: deterministic)
                XCTAssertEqual(hit.headers.first(name: "x-cache"), "HIT")
            }
            let bypass = try await data.chat(key: AdminHarness.supportKey, content: "ping", extra: deterministic,
                                             headers: [("cache-control", "no-cache")])
            XCTAssertEqual(bypass.headers.first(name: "x-cache"), "BYPASS")
        }
        let (c, hits, misses, bypasses) = redis ? (4, 2, 1, 1) : (0, 0, 0, 0)  // cache requests, by outcome
        await h.flushLedger()

        let text = try await scrape(admin)
        families = try PrometheusParser.parse(text)

        XCTAssertEqual(families["tollgate_http_requests_total"]?.value(), Double(21 + c))
        let requests = try XCTUnwrap(families["tollgate_requests_total"])
        XCTAssertEqual(requests.type, "counter")
        XCTAssertEqual(requests.sum(["department": "support", "status": "200"]), Double(9 + c))
        XCTAssertEqual(requests.sum(["department": "support", "instance": "", "status": "404"]), 2)
        XCTAssertEqual(requests.sum(["department": "engineering", "instance": "qwen-1", "status": "200"]), 4, "engineering routes to gpu 1 only")
        XCTAssertEqual(requests.sum(["department": "engineering", "instance": "qwen-0"]), 0)
        XCTAssertEqual(requests.sum(["department": "interns", "status": "200"]), 1)
        XCTAssertEqual(requests.sum(["department": "interns", "instance": "", "status": "429"]), 2)
        XCTAssertEqual(requests.sum([:]), Double(18 + c), "one per authenticated request; 401s are not a department's")
        // Per instance, what each simulated instance says it served.
        for (i, sim) in h.instances.enumerated() {
            XCTAssertEqual(requests.sum(["instance": "qwen-\(i)"]), Double(sim.stats.generations), "qwen-\(i)")
        }
        // Every row of the ledger, counted once, by department.
        let ledgerRows = try DatabaseQueue(path: h.databasePath).read { db in
            try Row.fetchAll(db, sql: "SELECT department, count(*), sum(latency_ms) FROM usage GROUP BY department")
        }
        var ledgerLatency = 0.0
        for row in ledgerRows {
            let department: String = row[0]
            XCTAssertEqual(requests.sum(["department": department]), Double(row[1] as Int), department)
            ledgerLatency += row[2] as Double
        }

        let cache = try XCTUnwrap(families["tollgate_cache_requests_total"])
        XCTAssertEqual(cache.sum(["department": "support", "outcome": "off"]), 11)
        XCTAssertEqual(cache.sum(["department": "support", "outcome": "hit"]), Double(hits))
        XCTAssertEqual(cache.sum(["department": "support", "outcome": "miss"]), Double(misses))
        XCTAssertEqual(cache.sum(["department": "support", "outcome": "bypass"]), Double(bypasses))
        XCTAssertEqual(cache.sum(["department": "engineering", "outcome": "off"]), 4)
        XCTAssertEqual(families["tollgate_cache_hits_total"]?.value(), Double(hits))
        XCTAssertEqual(families["tollgate_cache_misses_total"]?.value(), Double(misses))
        XCTAssertEqual(families["tollgate_cache_bypasses_total"]?.value(), Double(bypasses))
        // A hit reaches no instance.
        XCTAssertEqual(requests.sum(["department": "support", "instance": "", "status": "200"]), Double(hits))

        // Histograms: one observation per ledger row, per forwarded request, per stream.
        let duration = try XCTUnwrap(families["tollgate_request_duration_seconds"])
        XCTAssertEqual(duration.type, "histogram")
        XCTAssertEqual(duration.value(name: "tollgate_request_duration_seconds_count"), Double(18 + c))
        XCTAssertEqual(duration.value(name: "tollgate_request_duration_seconds_sum") ?? -1, ledgerLatency / 1000, accuracy: 0.001,
                       "the sum agrees with the ledger's latencies (to the microsecond per request)")
        let forwarded = Double(14 + misses + bypasses)
        XCTAssertEqual(families["tollgate_gateway_overhead_seconds"]?.value(name: "tollgate_gateway_overhead_seconds_count"), forwarded)
        XCTAssertEqual(families["tollgate_upstream_latency_seconds"]?.value(name: "tollgate_upstream_latency_seconds_count"), forwarded)
        XCTAssertEqual(families["tollgate_time_to_first_token_seconds"]?.value(name: "tollgate_time_to_first_token_seconds_count"), 3)
        let overhead = families["tollgate_gateway_overhead_seconds"]?.value(name: "tollgate_gateway_overhead_seconds_sum") ?? -1
        let upstream = families["tollgate_upstream_latency_seconds"]?.value(name: "tollgate_upstream_latency_seconds_sum") ?? -1
        XCTAssertGreaterThan(upstream, 0)
        XCTAssertGreaterThanOrEqual(overhead, 0)
        XCTAssertLessThan(overhead, upstream, "the gateway's own time is a small part")

        XCTAssertEqual(families["tollgate_upstream_requests_total"]?.value(), forwarded)
        XCTAssertEqual(families["tollgate_upstream_retries_total"]?.value(), 0)
        XCTAssertEqual(families["tollgate_client_errors_total"]?.value(), 5, "3 unknown keys, 2 unknown models")
        XCTAssertEqual(families["tollgate_quota_rejections_total"]?.value(), 2)
        XCTAssertEqual(families["tollgate_active_requests"]?.value(), 0)

        for i in 0..<2 {
            let labels = ["instance": "qwen-\(i)", "pool": "p"]
            XCTAssertEqual(families["tollgate_instance_up"]?.sum(labels), 1)
            XCTAssertEqual(families["tollgate_instance_ejected"]?.sum(labels), 0)
            XCTAssertEqual(families["tollgate_instance_in_flight"]?.sum(labels), 0)
        }

        // Quotas: limits as configured, use as the ledger has it.
        XCTAssertEqual(families["tollgate_quota_limit"]?.sum(["department": "interns", "meter": "tokens_per_month"]), 1)
        XCTAssertEqual(families["tollgate_quota_limit"]?.sum(["department": "support", "meter": "tokens_per_day"]), 50_000)
        var calendar = QuotaCalendar(timeZone: TimeZone(identifier: "UTC")!)
        let monthStart = calendar.current(atMs: Int64(Date().timeIntervalSince1970 * 1000)).monthStart
        for department in ["support", "interns"] {
            let tokens = try Reports.tokenSums(database: h.ledger, department: department, since: monthStart).tokens
            XCTAssertGreaterThan(tokens, 0)
            XCTAssertEqual(families["tollgate_quota_used"]?.sum(["department": department, "meter": "tokens_per_month"]), Double(tokens), department)
        }

        // The ledger and Redis.
        XCTAssertEqual(families["tollgate_ledger_rows_committed_total"]?.value(), Double(18 + c))
        XCTAssertEqual(families["tollgate_ledger_queue_depth"]?.value(), 0)
        XCTAssertGreaterThan(families["tollgate_ledger_last_write_latency_seconds"]?.value() ?? 0, 0)
        XCTAssertEqual(families["tollgate_redis_configured"]?.value(), redis ? 1 : 0)
        XCTAssertEqual(families["tollgate_redis_connections_available"]?.value(), redis ? 2 : 0)
        XCTAssertEqual(families["tollgate_config_generation"]?.value(), 1)

        // Counters follow the convention; every family has help and a type.
        for family in families.values {
            XCTAssertNotNil(family.help, family.name)
            if family.type == "counter" { XCTAssertTrue(family.name.hasSuffix("_total"), family.name) }
        }

        // In flight: a long stream is counted on its instance while it runs (read by a hop to
        // the loop that owns it).
        let slow = Task { try await h.data().chat(key: AdminHarness.engineeringKey, extra: #","max_tokens":6000"#, stream: true) }
        var seen = false
        for _ in 0..<100 where !seen {
            let now = try PrometheusParser.parse(try await scrape(admin))
            if now["tollgate_instance_in_flight"]?.sum(["instance": "qwen-1"]) == 1 {
                seen = now["tollgate_active_requests"]?.value() == 1
            }
            if !seen { try await Task.sleep(for: .milliseconds(20)) }
        }
        XCTAssertTrue(seen, "the running stream shows as in flight on qwen-1")
        _ = try await slow.value
        await admin.close()
        await data.close()
    }

    /// Operating the gateway: `tollgate check` says whether the ledger and Redis are reachable.
    func testCheckReportsLedgerAndRedis() async throws {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("tollgate")
        guard FileManager.default.isExecutableFile(atPath: executable.path) else { throw XCTSkip("no tollgate executable beside the tests") }
        let redis = try RedisServer()
        defer { redis.stop() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tollgate-check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let migrations = AdminHarness.repository.appendingPathComponent("migrations").path
        let database = dir.appendingPathComponent("ledger.sqlite").path
        let base = ["check", "--config", AdminHarness.repository.appendingPathComponent("routes").path, "--database", database, "--migrations", migrations]

        var r = try await runProcess(executable, base + ["--redis", redis.url()])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("database \(database): not created yet"), r.out)
        XCTAssertTrue(r.out.contains("redis 127.0.0.1:\(redis.port)/0: OK"), r.out)

        let known = try MigrationLoader.load(directory: migrations)
        try LedgerDatabase.open(path: database, migrations: known).close()
        r = try await runProcess(executable, base)
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("database \(database): OK, \(known.count) migration(s) applied"), r.out)
        XCTAssertTrue(r.out.contains("redis: not configured"), r.out)

        redis.stop()
        r = try await runProcess(executable, base + ["--redis", redis.url()])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("redis 127.0.0.1:\(redis.port)/0: not reachable"), r.err)

        try Data("not a database".utf8).write(to: URL(fileURLWithPath: database))
        r = try await runProcess(executable, base)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("database \(database):"), r.err)
    }

    func testParserRejectsMalformedExposition() {
        let bad = [
            "tollgate_x_total 1\n",                                                        // no TYPE
            "# TYPE a counter\na{b=\"c\"} x\n",                                              // bad value
            "# TYPE a counter\na{b=\"c} 1\n",                                                // unterminated label
            "# TYPE a counter\na{b=\"\\q\"} 1\n",                                            // bad escape
            "# TYPE a counter\na 1\na 2\n",                                                  // duplicate series
            "# TYPE a counter\n# TYPE a counter\na 1\n",                                     // TYPE twice
            "# TYPE a counter\na 1\n# TYPE b gauge\nb 1\na{x=\"1\"} 1\n",                    // family not contiguous
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",  // not cumulative
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",               // no +Inf
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",            // count differs
            "# TYPE a counter\na 1",                                                         // no final newline
        ]
        for text in bad {
            XCTAssertThrowsError(try PrometheusParser.parse(text), text)
        }
        XCTAssertNoThrow(try PrometheusParser.parse(
            "# HELP h A histogram.\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n# TYPE g gauge\ng{a=\"x\\\"y\\\\z\\n\"} -1.5e-3\n"))
    }

    private func scrape(_ admin: HTTPTestClient) async throws -> String {
        let answer = try await admin.send(.GET, "/metrics")
        XCTAssertEqual(answer.status, 200)
        XCTAssertEqual(answer.headers.first(name: "content-type"), "text/plain; version=0.0.4; charset=utf-8")
        return answer.body
    }

    private func expect(_ status: Int, _ answer: Answer, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(answer.status, status, answer.body, file: file, line: line)
    }

    private func eventually(_ condition: () -> Bool) async -> Bool {
        for _ in 0..<250 {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }
}

/// A strict reader of the Prometheus text format 0.0.4: `# HELP` and `# TYPE` at most once
/// per family and before its samples, families contiguous, valid metric and label names,
/// escaped label values, numeric values, no duplicate series, and for histograms increasing
/// `le` bounds ending in `+Inf`, cumulative counts, `_count` equal to the `+Inf` bucket and a
/// `_sum`.
enum PrometheusParser {
    struct Sample {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    struct Family {
        var name: String
        var type: String?
        var help: String?
        var samples: [Sample] = []

        /// Sum of the samples named `name` (default: the family's) whose labels include `match`.
        func sum(_ match: [String: String], name: String? = nil) -> Double {
            samples.filter { sample in sample.name == (name ?? self.name) && match.allSatisfy { k, v in sample.labels[k] == v } }
                .reduce(0) { $0 + $1.value }
        }

        /// The value of an unlabelled sample.
        func value(name: String? = nil) -> Double? {
            samples.first { $0.name == (name ?? self.name) && $0.labels.isEmpty }?.value
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var line: Int
        var text: String
        var reason: String
        var description: String { "line \(line): \(reason): \(text)" }
    }

    static let types: Set<String> = ["counter", "gauge", "histogram", "summary", "untyped"]

    static func parse(_ text: String) throws -> [String: Family] {
        guard text.hasSuffix("\n") else { throw Failure(line: 0, text: "", reason: "the exposition must end with a newline") }
        var families: [String: Family] = [:]
        var order: [String] = []
        var closed = Set<String>()
        var current: String?
        var series = Set<String>()

        func enter(_ family: String, line: Int, text: String) throws {
            if current == family { return }
            if let current { closed.insert(current) }
            guard !closed.contains(family) else { throw Failure(line: line, text: text, reason: "family \(family) is not contiguous") }
            current = family
            if families[family] == nil {
                families[family] = Family(name: family)
                order.append(family)
            }
        }

        let lines = text.dropLast().split(separator: "\n", omittingEmptySubsequences: false)
        for (index, raw) in lines.enumerated() {
            let line = String(raw), n = index + 1
            func fail(_ reason: String) -> Failure { Failure(line: n, text: line, reason: reason) }
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
                guard parts.count >= 3, parts[0] == "#", ["HELP", "TYPE"].contains(parts[1]) else { throw fail("unknown comment") }
                let name = parts[2]
                guard isMetricName(name) else { throw fail("bad metric name") }
                try enter(name, line: n, text: line)
                guard families[name]!.samples.isEmpty else { throw fail("\(parts[1]) after samples") }
                if parts[1] == "TYPE" {
                    guard parts.count == 4, types.contains(parts[3]) else { throw fail("bad type") }
                    guard families[name]!.type == nil else { throw fail("TYPE given twice") }
                    families[name]!.type = parts[3]
                } else {
                    guard families[name]!.help == nil else { throw fail("HELP given twice") }
                    let help = parts.count == 4 ? parts[3] : ""
                    guard unescapeHelp(help) != nil else { throw fail("bad escape in HELP") }
                    families[name]!.help = help
                }
                continue
            }
            guard !line.isEmpty else { throw fail("empty line") }
            let sample = try parseSample(line, fail: fail)
            let family: String
            if let f = families[sample.name], f.type != nil {
                family = sample.name
                guard f.type != "histogram" && f.type != "summary" else { throw fail("a histogram has only _bucket, _sum and _count samples") }
            } else if let suffix = ["_bucket", "_sum", "_count"].first(where: { sample.name.hasSuffix($0) }),
                      let f = families[String(sample.name.dropLast(suffix.count))], f.type == "histogram" {
                family = f.name
                if suffix == "_bucket" { guard sample.labels["le"] != nil else { throw fail("bucket without le") } }
                else { guard sample.labels["le"] == nil else { throw fail("le outside a bucket") } }
            } else {
                throw fail("sample without a TYPE")
            }
            try enter(family, line: n, text: line)
            let key = sample.name + "{" + sample.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") + "}"
            guard series.insert(key).inserted else { throw fail("duplicate series") }
            families[family]!.samples.append(sample)
        }

        for family in families.values where family.type == "histogram" {
            var groups: [[String: String]: (buckets: [(Double, Double)], sum: Double?, count: Double?)] = [:]
            for s in family.samples {
                var labels = s.labels
                let le = labels.removeValue(forKey: "le")
                var g = groups[labels] ?? ([], nil, nil)
                if s.name.hasSuffix("_bucket") {
                    guard let bound = le.flatMap(parseValue) else { throw Failure(line: 0, text: family.name, reason: "bad le") }
                    g.buckets.append((bound, s.value))
                } else if s.name.hasSuffix("_sum") {
                    g.sum = s.value
                } else {
                    g.count = s.value
                }
                groups[labels] = g
            }
            for (labels, g) in groups {
                let what = "\(family.name)\(labels)"
                guard let count = g.count, g.sum != nil else { throw Failure(line: 0, text: what, reason: "histogram without _sum or _count") }
                guard let last = g.buckets.last, last.0 == .infinity else { throw Failure(line: 0, text: what, reason: "no +Inf bucket last") }
                for (a, b) in zip(g.buckets, g.buckets.dropFirst()) {
                    guard a.0 < b.0 else { throw Failure(line: 0, text: what, reason: "le bounds not increasing") }
                    guard a.1 <= b.1 else { throw Failure(line: 0, text: what, reason: "bucket counts not cumulative") }
                }
                guard last.1 == count else { throw Failure(line: 0, text: what, reason: "_count differs from the +Inf bucket") }
            }
        }
        return families
    }

    static func isMetricName(_ name: String) -> Bool {
        name.range(of: #"^[a-zA-Z_:][a-zA-Z0-9_:]*$"#, options: .regularExpression) != nil
    }

    static func isLabelName(_ name: String) -> Bool {
        name.range(of: #"^[a-zA-Z_][a-zA-Z0-9_]*$"#, options: .regularExpression) != nil && !name.hasPrefix("__")
    }

    static func parseValue(_ text: String) -> Double? {
        switch text {
        case "+Inf": return .infinity
        case "-Inf": return -.infinity
        case "NaN": return .nan
        default:
            guard text.range(of: #"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"#, options: .regularExpression) != nil else { return nil }
            return Double(text)
        }
    }

    static func unescapeHelp(_ text: String) -> String? {
        var out = "", escaped = false
        for ch in text {
            if escaped {
                switch ch {
                case "\\": out.append("\\")
                case "n": out.append("\n")
                default: return nil
                }
                escaped = false
            } else if ch == "\\" {
                escaped = true
            } else {
                out.append(ch)
            }
        }
        return escaped ? nil : out
    }

    private static func parseSample(_ line: String, fail: (String) -> Failure) throws -> Sample {
        let chars = Array(line)
        var i = 0
        while i < chars.count && chars[i] != "{" && chars[i] != " " { i += 1 }
        let name = String(chars[0..<i])
        guard isMetricName(name) else { throw fail("bad metric name") }
        var labels: [String: String] = [:]
        if i < chars.count && chars[i] == "{" {
            i += 1
            while true {
                guard i < chars.count else { throw fail("unterminated labels") }
                if chars[i] == "}" { i += 1; break }
                var j = i
                while j < chars.count && chars[j] != "=" { j += 1 }
                let label = String(chars[i..<j])
                guard isLabelName(label) else { throw fail("bad label name \(label)") }
                guard j + 1 < chars.count, chars[j + 1] == "\"" else { throw fail("label value not quoted") }
                j += 2
                var value = ""
                while true {
                    guard j < chars.count else { throw fail("unterminated label value") }
                    let c = chars[j]
                    if c == "\"" { break }
                    if c == "\\" {
                        guard j + 1 < chars.count else { throw fail("unterminated escape") }
                        switch chars[j + 1] {
                        case "\\": value.append("\\")
                        case "\"": value.append("\"")
                        case "n": value.append("\n")
                        default: throw fail("bad escape in label value")
                        }
                        j += 2
                    } else {
                        value.append(c)
                        j += 1
                    }
                }
                guard labels.updateValue(value, forKey: label) == nil else { throw fail("label given twice") }
                i = j + 1
                if i < chars.count && chars[i] == "," { i += 1 } else if !(i < chars.count && chars[i] == "}") { throw fail("expected , or }") }
            }
        }
        guard i < chars.count, chars[i] == " " else { throw fail("expected a space before the value") }
        let rest = String(chars[(i + 1)...]).split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard rest.count == 1 || (rest.count == 2 && Int64(rest[1]) != nil), let value = parseValue(rest[0]) else {
            throw fail("bad value or timestamp")
        }
        return Sample(name: name, labels: labels, value: value)
    }
}
