import Foundation
import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateLedger
import TollgateDataPlane
import TollgateRedis
import TollgateServer
import TollgateTestSupport
import XCTest

/// `/admin` on a running gateway: the login and its refusals, then the page rendered by
/// headless Chromium, its figures checked against the ledger (`Reports`, as `tollgate report`
/// computes them) and against `tollgate report` itself.
final class AdminPageTests: XCTestCase {
    func testLoginRefusesDepartmentKeysAndSessionsEnd() async throws {
        let h = try await AdminHarness.start()
        do {
            let admin = try await h.admin()
            let form = [("content-type", "application/x-www-form-urlencoded")]

            // Without a session: to the login form. The form itself works offline.
            var a = try await admin.send(.GET, "/admin")
            XCTAssertEqual(a.status, 303)
            XCTAssertEqual(a.headers.first(name: "location"), "/admin/login")
            a = try await admin.send(.GET, "/admin/login")
            XCTAssertEqual(a.status, 200)
            XCTAssertTrue(a.body.contains("name=\"key\""), a.body)
            XCTAssertFalse(a.body.contains("<script"))

            // A department key, a wrong key, an empty form: refused, no cookie.
            a = try await admin.send(.POST, "/admin/login", body: "key=\(AdminHarness.supportKey)", headers: form)
            XCTAssertEqual(a.status, 403)
            XCTAssertTrue(a.body.contains("department key cannot"), a.body)
            XCTAssertNil(a.headers.first(name: "set-cookie"))
            a = try await admin.send(.POST, "/admin/login", body: "key=tg-guess", headers: form)
            XCTAssertEqual(a.status, 401)
            XCTAssertNil(a.headers.first(name: "set-cookie"))
            a = try await admin.send(.POST, "/admin/login", body: "", headers: form)
            XCTAssertEqual(a.status, 401)
            // A department key on the JSON API: 403; nothing: 401.
            a = try await admin.send(.GET, "/admin/api/overview?window=1h", headers: [("authorization", "Bearer \(AdminHarness.supportKey)")])
            XCTAssertEqual(a.status, 403)
            a = try await admin.send(.GET, "/admin/api/overview?window=1h")
            XCTAssertEqual(a.status, 401)
            // A made-up session cookie is no session.
            a = try await admin.send(.GET, "/admin", headers: [("cookie", "tollgate_admin_session=\(String(repeating: "ab", count: 32))")])
            XCTAssertEqual(a.status, 303)

            // The admin key (form-encoded, as a browser sends it): a random session id in an
            // HttpOnly, SameSite=Strict cookie, never the key.
            let encoded = h.adminKey.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            a = try await admin.send(.POST, "/admin/login", body: "key=\(encoded)", headers: form)
            XCTAssertEqual(a.status, 303)
            XCTAssertEqual(a.headers.first(name: "location"), "/admin")
            let setCookie = try XCTUnwrap(a.headers.first(name: "set-cookie"))
            XCTAssertTrue(setCookie.contains("HttpOnly"), setCookie)
            XCTAssertTrue(setCookie.contains("SameSite=Strict"), setCookie)
            XCTAssertFalse(setCookie.contains(h.adminKey))
            XCTAssertFalse(setCookie.contains(KeyDigest.hex(of: h.adminKey)))
            let cookie = String(setCookie.split(separator: ";")[0])
            XCTAssertTrue(cookie.hasPrefix("tollgate_admin_session="))

            a = try await admin.send(.GET, "/admin", headers: [("cookie", cookie)])
            XCTAssertEqual(a.status, 200)
            XCTAssertEqual(a.headers.first(name: "content-type"), "text/html; charset=utf-8")
            XCTAssertTrue(a.headers.first(name: "content-security-policy")?.contains("default-src 'none'") ?? false)
            XCTAssertTrue(a.body.contains("data-metric=\"hit-rate\""))
            a = try await admin.send(.GET, "/admin?window=2h", headers: [("cookie", cookie)])
            XCTAssertEqual(a.status, 400)
            for window in ["1h", "24h", "7d"] {
                a = try await admin.send(.GET, "/admin/api/overview?window=\(window)", headers: [("cookie", cookie)])
                XCTAssertEqual(a.status, 200, a.body)
                XCTAssertEqual(a.json?["window"] as? String, window)
            }
            a = try await admin.send(.GET, "/admin/api/overview?window=1y", headers: [("authorization", "Bearer \(h.adminKey)")])
            XCTAssertEqual(a.status, 400)
            XCTAssertEqual(a.errorCode, "invalid_window")

            // Logout ends the session on the server, not only in the browser.
            // Logging out is a change: the page's form sends its Origin, as a browser does.
            a = try await admin.send(.POST, "/admin/logout", headers: [
                ("cookie", cookie), ("host", "127.0.0.1:\(h.adminPort)"), ("origin", "http://127.0.0.1:\(h.adminPort)")])
            XCTAssertEqual(a.status, 303)
            XCTAssertTrue(a.headers.first(name: "set-cookie")?.contains("Max-Age=0") ?? false)
            a = try await admin.send(.GET, "/admin", headers: [("cookie", cookie)])
            XCTAssertEqual(a.status, 303)
            a = try await admin.send(.GET, "/admin/api/overview", headers: [("cookie", cookie)])
            XCTAssertEqual(a.status, 401)
            await admin.close()
        } catch {
            await h.stop()
            throw error
        }
        await h.stop()
    }

    func testPageInChromiumAgreesWithTheLedger() async throws {
        guard let chromium = executableOnPath(["chromium", "chromium-browser", "google-chrome"]) else {
            throw missingTool("chromium is not installed (apt-get install -y chromium)")
        }
        let redis = try RedisServer()  // the response cache and the shared quotas
        let h = try await AdminHarness.start(redis: redis.url())
        do {
            try await checkPage(h, chromium: chromium)
        } catch {
            await h.stop()
            redis.stop()
            throw error
        }
        await h.stop()
        redis.stop()
    }

    private func checkPage(_ h: AdminHarness, chromium: URL) async throws {
        let up = await waitFor { h.gateway.dataPlane.redis?.availableConnections == 2 }
        XCTAssertTrue(up, "Redis connections up")
        let data = try await h.data()
        func send(_ key: String, _ content: String = "hello", deterministic: Bool = false, stream: Bool = false,
                  model: String = "qwen2.5-0.5b-instruct", cache expected: String? = nil, status: Int = 200) async throws {
            let answer = try await data.chat(key: key, model: model, content: content, extra: deterministic ? #","temperature":0"# : "", stream: stream)
            XCTAssertEqual(answer.status, status, answer.body)
            if let expected {
                XCTAssertEqual(answer.headers.first(name: "x-cache"), expected, content)
                // The store happens off the response path: let it land before the next identical request.
                if expected == "MISS" { try await Task.sleep(for: .milliseconds(200)) }
            }
        }
        // Not cacheable (no temperature 0, no seed): support 8 + 2 streams + an unknown model, engineering 5.
        for i in 0..<8 { try await send(AdminHarness.supportKey, "hello \(i)") }
        for _ in 0..<2 { try await send(AdminHarness.supportKey, stream: true) }
        try await send(AdminHarness.supportKey, model: "no-such-model", status: 404)
        for _ in 0..<5 { try await send(AdminHarness.engineeringKey) }
        // Cacheable: support 6 hits of 8 (one prompt must be escaped on the page), engineering 1 of 4.
        let hostile = "<img src=x onerror=alert(1)></li><b>'single' & more"
        for (content, times) in [("What are your opening hours?", 5), (hostile, 3)] {
            for n in 0..<times { try await send(AdminHarness.supportKey, content, deterministic: true, cache: n == 0 ? "MISS" : "HIT") }
        }
        for (content, expected) in [("Summarise the build log", "MISS"), ("Summarise the build log", "HIT"), ("Why did CI fail?", "MISS"), ("Deploy status?", "MISS")] {
            try await send(AdminHarness.engineeringKey, content, deterministic: true, cache: expected)
        }
        // interns: the first request passes, then the monthly quota of 1 token is spent.
        try await send(AdminHarness.internsKey)
        for _ in 0..<2 { try await send(AdminHarness.internsKey, status: 429) }
        await data.close()
        await h.flushLedger()

        // Chromium logs in through the form as a person would: a page on another loopback port
        // (same site, so the SameSite=Strict cookie is kept) posts the key, the 303 leads to
        // /admin with the cookie, and --dump-dom prints the page Chromium rendered.
        let wrapper = """
            <!doctype html><meta charset="utf-8"><title>login</title>
            <form id="f" method="post" action="http://127.0.0.1:\(h.adminPort)/admin/login"><input type="hidden" name="key" value="\(h.adminKey)"></form>
            <script>document.getElementById('f').submit()</script>
            """
        let server = try await StaticPageServer.start(html: wrapper, group: h.group)
        defer { Task { await server.stop() } }
        func browse(_ extra: [String]) async throws -> (status: Int32, out: String, err: String) {
            let profile = h.directory.appendingPathComponent("chromium-\(UUID().uuidString)").path
            return try await runProcess(chromium, [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--user-data-dir=\(profile)", "--virtual-time-budget=15000",
            ] + extra + ["http://127.0.0.1:\(server.port)/login"])
        }
        let run = try await browse(["--dump-dom"])
        let dom = run.out
        guard dom.contains("data-metric=\"hit-rate\"") else {
            return XCTFail("Chromium did not reach the admin page (status \(run.status)):\n\(dom.prefix(3000))\n\(run.err.suffix(3000))")
        }
        // Also a picture, for a person to look at.
        let shot = try await browse(["--window-size=1280,2600", "--screenshot=/tmp/tollgate-admin-page.png"])
        XCTAssertEqual(shot.status, 0, shot.err.suffix(2000).description)

        // Offline: nothing loaded from anywhere, no script on the page.
        XCTAssertFalse(dom.contains("<script"))
        XCTAssertFalse(dom.contains("<link"))
        XCTAssertFalse(dom.contains("src=\"http"))
        XCTAssertTrue(dom.contains("<svg"))

        let page = DOM(dom)
        let main = try XCTUnwrap(page.elements.first { $0["data-from-ms"] != nil })
        let fromMs = try XCTUnwrap(Int64(main["data-from-ms"] ?? "")), toMs = try XCTUnwrap(Int64(main["data-to-ms"] ?? ""))
        XCTAssertEqual(main["data-window"], "1h")
        XCTAssertEqual(toMs - fromMs, 3_600_000)
        let period = ReportPeriod(from: Date(timeIntervalSince1970: Double(fromMs) / 1000), to: Date(timeIntervalSince1970: Double(toMs) / 1000))
        let reports = try Reports.departments(databases: [h.ledger], period: period, department: nil)
        let series = try Reports.hitRateSeries(database: h.ledger, from: fromMs, to: toMs, buckets: 60)

        // Totals: 7 hits of 12 cacheable; 19 + 9 + 3 requests.
        let hits = series.reduce(0) { $0 + $1.hits }, misses = series.reduce(0) { $0 + $1.misses }
        XCTAssertEqual(hits, 7)
        XCTAssertEqual(misses, 5)
        XCTAssertEqual(try page.value("hit-rate"), Double(hits) / Double(hits + misses), accuracy: 1e-6)
        XCTAssertEqual(try page.value("cache-hits"), 7)
        XCTAssertEqual(try page.value("upstream-saved"), 7)
        XCTAssertEqual(try page.value("requests"), Double(reports.reduce(0) { $0 + $1.requests }))
        XCTAssertEqual(try page.value("requests"), 31)
        XCTAssertEqual(try page.value("in-flight"), 0)

        // Per department: exactly the ledger's report for the window.
        XCTAssertEqual(Set(reports.map(\.department)), ["support", "engineering", "interns"])
        for report in reports {
            let row = page.within("<tr data-department=\"\(report.department)\"", until: "</tr>")
            XCTAssertEqual(try row.value("department-requests"), Double(report.requests), report.department)
            XCTAssertEqual(try row.value("department-hit-rate"), report.cacheHitRate, accuracy: 1e-6, report.department)
            XCTAssertEqual(try row.value("department-cache-hits"), Double(report.cacheHits), report.department)
            XCTAssertEqual(try row.value("department-errors"), Double(report.errors), report.department)
            XCTAssertEqual(try row.value("department-upstream-calls"), Double(report.upstreamCalls), report.department)
            XCTAssertEqual(try row.value("department-p50"), report.p50LatencyMs, accuracy: 1e-3, report.department)
            XCTAssertEqual(try row.value("department-p95"), report.p95LatencyMs, accuracy: 1e-3, report.department)
            XCTAssertEqual(try row.value("department-tokens"), Double(report.totalTokens), report.department)
        }
        let support = try XCTUnwrap(reports.first { $0.department == "support" })
        XCTAssertEqual(support.requests, 19)
        XCTAssertEqual(support.cacheHitRate, 0.75, accuracy: 1e-9)
        XCTAssertEqual(reports.first { $0.department == "engineering" }?.cacheHitRate ?? -1, 0.25, accuracy: 1e-9)

        // Quota bars: the counters admission uses (Redis, shared by replicas), which equal the
        // ledger's tokens this month.
        XCTAssertEqual(page.elements.first { $0["data-metric"] == "quota-source" && $0["data-department"] == "support" }?["data-value"], "redis")
        var calendar = QuotaCalendar(timeZone: TimeZone(identifier: "UTC")!)
        let monthStart = calendar.current(atMs: Int64(Date().timeIntervalSince1970 * 1000)).monthStart
        for (department, limit) in [("support", 100_000), ("interns", 1)] {
            let meter = try XCTUnwrap(page.elements.first {
                $0["data-metric"] == "quota-used" && $0["data-department"] == department && $0["data-meter"] == "tokens_per_month"
            })
            let ledgerTokens = try Reports.tokenSums(database: h.ledger, department: department, since: monthStart).tokens
            XCTAssertGreaterThan(ledgerTokens, 0)
            XCTAssertEqual(Int(meter["data-value"] ?? ""), ledgerTokens, department)
            XCTAssertEqual(Int(meter["data-limit"] ?? ""), limit, department)
        }
        XCTAssertNotNil(page.elements.first { $0["data-metric"] == "quota-used" && $0["data-meter"] == "tokens_per_day" })
        XCTAssertNil(page.elements.first { $0["data-metric"] == "quota-used" && $0["data-department"] == "engineering" })

        // Instances: health, in-flight, shares, and p50/p95 from the ledger.
        let latencies = try Reports.instanceLatencies(database: h.ledger, from: fromMs, to: toMs)
        XCTAssertEqual(latencies.map(\.instance), ["qwen-0", "qwen-1"])
        for l in latencies {
            let row = page.within("<tr data-instance=\"\(l.instance)\"", until: "</tr>")
            XCTAssertEqual(row.elements.first { $0["data-metric"] == "instance-health" }?["data-value"], "up")
            XCTAssertEqual(try row.value("instance-in-flight"), 0)
            XCTAssertEqual(try row.value("instance-requests"), Double(l.requests), l.instance)
            XCTAssertEqual(try row.value("instance-p50"), l.p50LatencyMs, accuracy: 1e-3, l.instance)
            XCTAssertEqual(try row.value("instance-p95"), l.p95LatencyMs, accuracy: 1e-3, l.instance)
        }
        // engineering routes to gpu 1 only; support by weight 1:3.
        let qwen1 = page.within("<tr data-instance=\"qwen-1\"", until: "</tr>")
        XCTAssertEqual(Double(qwen1.elements.first { $0["data-metric"] == "instance-share" && $0["data-department"] == "engineering" }?["data-value"] ?? ""), 100)
        XCTAssertEqual(Double(qwen1.elements.first { $0["data-metric"] == "instance-share" && $0["data-department"] == "support" }?["data-value"] ?? ""), 75)

        // Top prompts, most hit first, escaped: the hostile preview is text, not markup.
        XCTAssertEqual(page.elements.filter { $0["data-metric"] == "top-prompt" }.map { $0["data-value"] ?? "" }, ["4", "2", "1"])
        XCTAssertFalse(dom.contains("<img"), "a prompt became markup")
        XCTAssertTrue(dom.contains("&lt;img src=x onerror=alert(1)&gt;&lt;/li&gt;&lt;b&gt;'single' &amp; more"), "the prompt is shown as text")

        // Recent errors: the two 429s and the 404.
        XCTAssertEqual(page.elements.filter { $0["data-metric"] == "recent-error" }.map { $0["data-value"] ?? "" }.sorted(), ["404", "429", "429"])

        // The JSON API says the same.
        let admin = try await h.admin()
        let api = try await admin.send(.GET, "/admin/api/overview?window=1h", headers: [("authorization", "Bearer \(h.adminKey)")])
        await admin.close()
        XCTAssertEqual(api.status, 200, api.body)
        let cache = try XCTUnwrap(api.json?["cache"] as? [String: Any])
        XCTAssertEqual(cache["hits"] as? Int, 7)
        XCTAssertEqual(cache["misses"] as? Int, 5)
        XCTAssertEqual(cache["upstreamCallsSaved"] as? Int, 7)

        // And `tollgate report` (the month holds exactly the rows of this hour, unless the hour
        // straddles a month boundary).
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("tollgate")
        let monthOfFrom = calendar.current(atMs: fromMs).monthStart
        if monthOfFrom == monthStart, FileManager.default.isExecutableFile(atPath: executable.path) {
            let cli = try await runProcess(executable, [
                "report", "--format", "json", "--time-zone", "UTC", "--database", h.databasePath,
                "--migrations", AdminHarness.repository.appendingPathComponent("migrations").path, "--config", h.configPath,
            ])
            XCTAssertEqual(cli.status, 0, cli.err)
            let rows = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(cli.out.utf8)) as? [[String: Any]])
            for row in rows {
                let name = try XCTUnwrap(row["department"] as? String)
                let tr = page.within("<tr data-department=\"\(name)\"", until: "</tr>")
                XCTAssertEqual(try tr.value("department-requests"), Double(row["requests"] as? Int ?? -1), name)
                XCTAssertEqual(try tr.value("department-cache-hits"), Double(row["cacheHits"] as? Int ?? -1), name)
                XCTAssertEqual(try tr.value("department-hit-rate"), row["cacheHitRate"] as? Double ?? -1, accuracy: 1e-6, name)
                XCTAssertEqual(try tr.value("department-p95"), row["p95LatencyMs"] as? Double ?? -1, accuracy: 1e-3, name)
            }
            XCTAssertEqual(rows.count, 3)
        }
    }
}

/// Polls `condition` for up to 5 s.
func waitFor(_ condition: () -> Bool) async -> Bool {
    for _ in 0..<250 {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return condition()
}

/// The few things the tests read from a serialized DOM: start tags and their attributes.
struct DOM {
    let html: String
    /// Attributes of every start tag, in document order (entities decoded).
    let elements: [[String: String]]

    init(_ html: String) {
        self.html = html
        let tag = try! NSRegularExpression(pattern: #"<[a-zA-Z][a-zA-Z0-9]*((?:\s+[^\s=>/]+(?:="[^"]*")?)*)\s*/?>"#)
        let attribute = try! NSRegularExpression(pattern: #"([^\s=>/]+)="([^"]*)""#)
        let ns = html as NSString
        elements = tag.matches(in: html, range: NSRange(location: 0, length: ns.length)).map { match in
            let attributes = ns.substring(with: match.range(at: 1))
            let a = attributes as NSString
            var out: [String: String] = [:]
            for m in attribute.matches(in: attributes, range: NSRange(location: 0, length: a.length)) {
                out[a.substring(with: m.range(at: 1))] = DOM.decode(a.substring(with: m.range(at: 2)))
            }
            return out
        }
    }

    static func decode(_ text: String) -> String {
        text.replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&#39;", with: "'")
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    /// The part from `start` to the next `end` (empty when `start` is missing).
    func within(_ start: String, until end: String) -> DOM {
        guard let from = html.range(of: start) else { return DOM("") }
        let to = html.range(of: end, range: from.upperBound..<html.endIndex)?.upperBound ?? html.endIndex
        return DOM(String(html[from.lowerBound..<to]))
    }

    /// `data-value` of the first element with `data-metric="metric"`.
    func value(_ metric: String) throws -> Double {
        let element = try XCTUnwrap(elements.first { $0["data-metric"] == metric }, "no data-metric=\"\(metric)\"")
        return try XCTUnwrap(Double(element["data-value"] ?? ""), "data-value of \(metric)")
    }
}
