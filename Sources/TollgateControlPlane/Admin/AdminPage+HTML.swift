import Foundation
import TollgateLedger

/// The admin page as one HTML document: inline CSS and SVG, no script, no external asset,
/// so it works offline. Every figure a test or a scraper may want carries
/// `data-metric="…"` and its raw value in `data-value`.
enum AdminPageHTML {
    static let palette = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626"]

    static let style = """
        :root{--bg:#f6f7f9;--card:#fff;--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--accent:#2563eb;--ok:#059669;--warn:#d97706;--bad:#dc2626;--bar:#dbeafe}
        @media (prefers-color-scheme:dark){:root{--bg:#111827;--card:#1f2937;--fg:#f3f4f6;--muted:#9ca3af;--line:#374151;--accent:#60a5fa;--bar:#1e3a5f}}
        *{box-sizing:border-box}
        body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
        header{display:flex;flex-wrap:wrap;gap:.75rem;align-items:center;justify-content:space-between;padding:.75rem 1rem;background:var(--card);border-bottom:1px solid var(--line)}
        header h1{font-size:1.15rem;margin:0}
        header .sub{color:var(--muted);font-size:.85rem}
        nav a{display:inline-block;padding:.3rem .7rem;border:1px solid var(--line);border-radius:999px;color:var(--fg);text-decoration:none;margin-right:.25rem}
        nav a[aria-current]{background:var(--accent);border-color:var(--accent);color:#fff}
        button{font:inherit;padding:.35rem .8rem;border-radius:6px;border:1px solid var(--line);background:var(--card);color:var(--fg);cursor:pointer}
        main{max-width:1200px;margin:0 auto;padding:1rem;display:grid;gap:1rem}
        section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:1rem;min-width:0}
        h2{font-size:1rem;margin:0 0 .75rem}
        .kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:.75rem;background:none;border:0;padding:0}
        .kpi{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:.75rem 1rem}
        .kpi b{display:block;font-size:1.6rem;font-weight:650}
        .kpi span{color:var(--muted);font-size:.85rem}
        .scroll{overflow-x:auto}
        table{border-collapse:collapse;width:100%;font-size:.9rem}
        th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid var(--line);vertical-align:top;white-space:nowrap}
        th{color:var(--muted);font-weight:600}
        td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
        .muted{color:var(--muted)}
        .mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85rem}
        .badge{display:inline-block;padding:0 .5rem;border-radius:999px;font-size:.8rem;color:#fff}
        .up{background:var(--ok)}.down{background:var(--bad)}.ejected{background:var(--warn)}
        .chart svg{width:100%;min-width:520px;height:auto;display:block}
        td.wrap{white-space:normal;min-width:12rem}
        td.mono{white-space:normal;word-break:break-all}
        .legend{display:flex;flex-wrap:wrap;gap:.4rem 1rem;font-size:.85rem;margin-top:.5rem}
        .legend i{display:inline-block;width:.9rem;height:.25rem;border-radius:2px;vertical-align:middle;margin-right:.3rem}
        .quotas{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:1rem}
        .meter{margin:.35rem 0}
        .meter .label{display:flex;justify-content:space-between;font-size:.85rem;gap:.5rem}
        .bar{height:.6rem;background:var(--line);border-radius:999px;overflow:hidden}
        .bar span{display:block;height:100%;background:var(--accent)}
        .bar span.high{background:var(--warn)}.bar span.over{background:var(--bad)}
        ol.prompts{margin:0;padding-left:1.4rem}
        ol.prompts li{margin:.3rem 0;word-break:break-word}
        .grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:1rem}
        .login{max-width:360px;margin:12vh auto;background:var(--card);border:1px solid var(--line);border-radius:10px;padding:1.5rem}
        .login input{width:100%;font:inherit;padding:.5rem;margin:.5rem 0 1rem;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg)}
        .error{color:var(--bad)}
        @media (max-width:600px){main{padding:.5rem}section{padding:.75rem}.kpi b{font-size:1.3rem}}
        """

    static func document(title: String, body: String) -> String {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
        <meta name="referrer" content="no-referrer"><title>\(HTML.escape(title))</title><style>\(style)</style></head>
        <body>\(body)</body></html>

        """
    }

    // MARK: Login

    static func login(message: String?) -> String {
        var body = "<form class=\"login\" method=\"post\" action=\"/admin/login\"><h1>Tollgate admin</h1>"
        if let message { body += "<p class=\"error\" role=\"alert\">\(HTML.escape(message))</p>" }
        body += """
            <label for="key">Admin key</label>
            <input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
            <button type="submit">Log in</button>
            <p class="muted">The admin key is TOLLGATE_ADMIN_KEY or the file auth.admin_key_file names. Department keys cannot log in.</p>
            </form>
            """
        return document(title: "Tollgate admin — log in", body: body)
    }

    static func message(title: String, text: String) -> String {
        document(title: title, body: "<div class=\"login\"><h1>\(HTML.escape(title))</h1><p>\(HTML.escape(text))</p><p><a href=\"/admin\">Admin page</a></p></div>")
    }

    // MARK: Overview

    static func page(_ o: AdminOverview) -> String {
        let zone = TimeZone(identifier: o.timeZone) ?? TimeZone(identifier: "UTC")!
        var b = ""
        b += "<header><div><h1>Tollgate admin</h1><div class=\"sub\">\(HTML.escape(o.windowLabel)) · \(HTML.escape(time(o.fromMs, zone, seconds: false))) – \(HTML.escape(time(o.toMs, zone, seconds: false))) \(HTML.escape(o.timeZone)) · generation \(o.live.generation)</div></div>"
        b += "<nav aria-label=\"Window\">"
        for w in AdminWindow.allCases {
            b += "<a href=\"/admin?window=\(w.rawValue)\"\(w.rawValue == o.window ? " aria-current=\"page\"" : "")>\(w.rawValue)</a>"
        }
        b += "</nav><div><a class=\"muted\" href=\"/admin/api/overview?window=\(o.window)\">JSON</a> · <a class=\"muted\" href=\"/metrics\">metrics</a> "
        b += "<form method=\"post\" action=\"/admin/logout\" style=\"display:inline\"><button type=\"submit\">Log out</button></form></div></header>"
        b += "<main data-window=\"\(o.window)\" data-from-ms=\"\(o.fromMs)\" data-to-ms=\"\(o.toMs)\">"
        if !o.ledger {
            b += "<section><p class=\"error\">This gateway runs without a usage ledger: only live figures are shown.</p></section>"
        }
        b += fleet(o)
        if let replica = o.replica {
            b += "<p class=\"muted\" data-scope=\"replica\">Below: this replica (\(HTML.escape(replica))) — its ledger and counters. Exact fleet reports: <code>tollgate report</code> over every replica's ledger.</p>"
        }
        b += kpis(o)
        b += chart(o, zone: zone)
        b += departments(o)
        b += quotas(o, zone: zone)
        b += capacity(o)
        b += queues(o)
        b += instances(o)
        b += "<div class=\"grid2\">"
        b += prompts(o)
        b += errors(o, zone: zone)
        b += "</div></main>"
        return document(title: "Tollgate admin — \(o.windowLabel)", body: b)
    }

    // MARK: When the GPUs are full

    /// Per pool: the original set-up's scaling rules and the waiting line's, with the evidence.
    private static func capacity(_ o: AdminOverview) -> String {
        var s = "<section aria-label=\"Capacity\"><h2>Capacity</h2>"
        for c in o.capacity {
            let cls = c.verdict == "add_instances" ? "down" : (c.verdict == "has_room" ? "up" : "ejected")
            s += "<p><span class=\"badge \(cls)\" data-metric=\"capacity-verdict\" data-pool=\"\(HTML.escape(c.pool))\" data-value=\"\(c.verdict)\">\(HTML.escape(c.verdict.replacingOccurrences(of: "_", with: " ")))</span> "
            s += "<b data-metric=\"capacity-summary\" data-pool=\"\(HTML.escape(c.pool))\">\(HTML.escape(c.summary))</b></p>"
            if !c.evidence.isEmpty {
                s += "<ul>" + c.evidence.map { "<li>\(HTML.escape($0))</li>" }.joined() + "</ul>"
            }
            s += "<p class=\"muted\">\(HTML.integer(c.forwarded)) forwarded, mean latency \(HTML.escape(ms(c.meanLatencyMs))), \(c.upstreamTimeouts) upstream timeouts, \(c.waited) waited (mean \(HTML.escape(ms(c.meanWaitMs)))), \(c.shed) shed, \(c.waitingNow) waiting now, \(c.slots.map { "\($0) slots" } ?? "no limit")</p>"
        }
        s += "<p class=\"muted\">Rules: mean latency over 2.5 s, upstream timeouts piling up, sustained queueing (over 20% of requests waited, 0.5 s on average) or shed requests → add instances; else the room at 80% of the slots busy.</p>"
        if !o.gpu.isEmpty {
            s += "<div class=\"scroll\"><table><thead><tr><th>Department</th><th class=\"num\">GPU-seconds used</th><th class=\"num\">GPU-seconds saved by the cache</th></tr></thead><tbody>"
            for g in o.gpu {
                s += "<tr><td>\(HTML.escape(g.department))</td>"
                s += "<td class=\"num\" data-metric=\"gpu-seconds-used\" data-department=\"\(HTML.escape(g.department))\" data-value=\"\(HTML.raw(g.usedSeconds))\">\(HTML.escape(oneDecimal(g.usedSeconds)))</td>"
                s += "<td class=\"num\" data-metric=\"gpu-seconds-saved\" data-department=\"\(HTML.escape(g.department))\" data-value=\"\(HTML.raw(g.savedByCacheSeconds))\">\(HTML.escape(oneDecimal(g.savedByCacheSeconds)))</td></tr>"
            }
            s += "</tbody></table></div>"
        }
        return s + "</section>"
    }

    /// The waiting lines per lane and department, live since start.
    private static func queues(_ o: AdminOverview) -> String {
        var s = "<section aria-label=\"Waiting lines\"><h2>Waiting for a free instance (since start)</h2>"
        guard !o.queues.isEmpty else { return s + "<p class=\"muted\">No request has waited: every instance had a free slot.</p></section>" }
        s += "<div class=\"scroll\"><table><thead><tr><th>Lane</th><th>Department</th><th class=\"num\">Waiting</th><th class=\"num\">Got a slot</th><th class=\"num\">Mean wait</th><th class=\"num\">p95 wait ≤</th><th class=\"num\">Shed (timeout)</th><th class=\"num\">Shed (full)</th></tr></thead><tbody>"
        for q in o.queues {
            let attrs = "data-lane=\"\(HTML.escape(q.lane))\" data-department=\"\(HTML.escape(q.department))\""
            s += "<tr><td>\(HTML.escape(q.lane))</td><td>\(HTML.escape(q.department))</td>"
            s += "<td class=\"num\" data-metric=\"queue-waiting\" \(attrs) data-value=\"\(q.waiting)\">\(HTML.integer(q.waiting))</td>"
            s += "<td class=\"num\">\(HTML.integer(q.dispatched))</td>"
            s += "<td class=\"num\" data-metric=\"queue-mean-wait-ms\" \(attrs) data-value=\"\(HTML.raw(q.meanWaitMs))\">\(HTML.escape(ms(q.meanWaitMs)))</td>"
            s += "<td class=\"num\">\(q.p95WaitMs.map { HTML.escape(ms($0)) } ?? "–")</td>"
            s += "<td class=\"num\" data-metric=\"queue-shed\" \(attrs) data-value=\"\(q.shed)\">\(HTML.integer(q.timedOut))</td>"
            s += "<td class=\"num\">\(HTML.integer(q.full))</td></tr>"
        }
        return s + "</tbody></table></div></section>"
    }

    private static func ms(_ v: Double) -> String { v >= 1000 ? oneDecimal(v / 1000) + " s" : "\(Int(v.rounded())) ms" }

    private static func oneDecimal(_ v: Double) -> String { String(format: "%.1f", v) }

    private static func kpi(_ metric: String, value: String, raw: String, label: String) -> String {
        "<div class=\"kpi\"><b data-metric=\"\(metric)\" data-value=\"\(raw)\">\(value)</b><span>\(HTML.escape(label))</span></div>"
    }

    private static func kpis(_ o: AdminOverview) -> String {
        let inFlight = o.instances.reduce(0) { $0 + $1.inFlight }
        let available = o.instances.filter(\.available).count
        var s = "<section class=\"kpis\" aria-label=\"Summary\">"
        s += kpi("hit-rate", value: o.cache.hits + o.cache.misses > 0 ? HTML.percent(fraction: o.cache.hitRate) : "–", raw: HTML.raw(o.cache.hitRate),
                 label: "cache hit rate (\(HTML.integer(o.cache.hits)) of \(HTML.integer(o.cache.hits + o.cache.misses)) cacheable)")
        s += kpi("cache-hits", value: HTML.integer(o.cache.servedFromCache), raw: "\(o.cache.servedFromCache)", label: "requests served from cache")
        s += kpi("upstream-saved", value: HTML.integer(o.cache.upstreamCallsSaved), raw: "\(o.cache.upstreamCallsSaved)", label: "upstream calls saved")
        s += kpi("requests", value: HTML.integer(o.cache.requests), raw: "\(o.cache.requests)", label: "requests")
        s += kpi("errors", value: HTML.integer(o.departments.reduce(0) { $0 + $1.errors }),
                 raw: "\(o.departments.reduce(0) { $0 + $1.errors })", label: "errors (status ≥ 400)")
        s += kpi("in-flight", value: HTML.integer(inFlight), raw: "\(inFlight)", label: "in flight now")
        s += kpi("instances-available", value: "\(available)/\(o.instances.count)", raw: "\(available)", label: "instances available")
        let redis = o.live.redis
        s += kpi("redis-available", value: redis.configured ? "\(redis.availableConnections)/\(redis.connections)" : "–",
                 raw: "\(redis.availableConnections)", label: redis.configured ? "Redis connections up" : "Redis not configured")
        return s + "</section>"
    }

    // MARK: Chart

    private static func chart(_ o: AdminOverview, zone: TimeZone) -> String {
        let width = 720.0, height = 240.0, left = 40.0, right = 10.0, top = 12.0, bottom = 28.0
        let plotW = width - left - right, plotH = height - top - bottom
        let n = max(o.series.count, 1)
        let step = plotW / Double(n)
        let maxRequests = max(1, o.series.map(\.requests).max() ?? 0)
        func x(_ i: Int) -> Double { left + step * (Double(i) + 0.5) }
        func y(_ rate: Double) -> Double { top + plotH * (1 - rate) }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }

        var s = "<section class=\"chart\"><h2>Cache hit rate over time</h2><div class=\"scroll\">"
        s += "<svg viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"Cache hit rate per time slice, \(HTML.escape(o.windowLabel))\" data-metric=\"hit-rate-chart\">"
        for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
            s += "<line x1=\"\(f(left))\" x2=\"\(f(width - right))\" y1=\"\(f(y(tick)))\" y2=\"\(f(y(tick)))\" stroke=\"currentColor\" stroke-opacity=\"0.12\"/>"
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(y(tick) + 4))\" font-size=\"12\" text-anchor=\"end\" fill=\"currentColor\" fill-opacity=\"0.6\">\(Int(tick * 100))%</text>"
        }
        // Request volume behind the lines, scaled to the busiest slice.
        for (i, bucket) in o.series.enumerated() where bucket.requests > 0 {
            let h = plotH * Double(bucket.requests) / Double(maxRequests)
            let rate = bucket.hits + bucket.misses > 0 ? HTML.percent(fraction: Double(bucket.hits) / Double(bucket.hits + bucket.misses)) : "–"
            s += "<rect x=\"\(f(left + step * Double(i) + step * 0.1))\" y=\"\(f(top + plotH - h))\" width=\"\(f(step * 0.8))\" height=\"\(f(h))\" fill=\"var(--bar)\">"
            s += "<title>\(HTML.escape(time(bucket.bucketStartMs, zone, seconds: false))): \(bucket.requests) requests, \(bucket.hits) hits, hit rate \(rate)</title></rect>"
        }
        func line(_ series: [HitRateBucket], color: String, width: Double, name: String) -> String {
            var out = "", segment: [String] = []
            func flush() {
                if segment.count == 1 {
                    let p = segment[0].split(separator: ",")
                    out += "<circle cx=\"\(p[0])\" cy=\"\(p[1])\" r=\"\(f(width + 0.5))\" fill=\"\(color)\"/>"
                } else if segment.count > 1 {
                    out += "<polyline points=\"\(segment.joined(separator: " "))\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"\(f(width))\" stroke-linejoin=\"round\" stroke-linecap=\"round\"/>"
                }
                segment = []
            }
            for (i, bucket) in series.enumerated() {
                let cacheable = bucket.hits + bucket.misses
                if cacheable == 0 { flush(); continue }
                segment.append("\(f(x(i))),\(f(y(Double(bucket.hits) / Double(cacheable))))")
            }
            flush()
            return "<g data-series=\"\(HTML.escape(name))\">\(out)</g>"
        }
        let departments = o.seriesByDepartment.keys.sorted()
        for (i, name) in departments.enumerated() {
            s += line(o.seriesByDepartment[name]!, color: palette[(i + 1) % palette.count], width: 1.5, name: name)
        }
        s += line(o.series, color: "var(--accent)", width: 3, name: "all")
        let labels = 4
        for k in 0...labels {
            let i = min(n - 1, k * (n - 1) / labels)
            let ms = o.series.indices.contains(i) ? o.series[i].bucketStartMs : o.fromMs
            let anchor = k == 0 ? "start" : k == labels ? "end" : "middle"
            let lx = k == 0 ? left : k == labels ? width - right : x(i)
            s += "<text x=\"\(f(lx))\" y=\"\(f(height - 8))\" font-size=\"12\" text-anchor=\"\(anchor)\" fill=\"currentColor\" fill-opacity=\"0.6\">\(HTML.escape(axisTime(ms, zone, window: o.window)))</text>"
        }
        if o.cache.requests == 0 {
            s += "<text x=\"\(f(left + plotW / 2))\" y=\"\(f(top + plotH / 2))\" font-size=\"14\" text-anchor=\"middle\" fill=\"currentColor\" fill-opacity=\"0.6\">No requests in this window</text>"
        }
        s += "</svg></div><div class=\"legend\"><span><i style=\"background:var(--accent);height:.35rem\"></i>all departments</span>"
        for (i, name) in departments.enumerated() {
            s += "<span><i style=\"background:\(palette[(i + 1) % palette.count])\"></i>\(HTML.escape(name))</span>"
        }
        s += "<span><i style=\"background:var(--bar);height:.6rem\"></i>requests per slice</span></div>"
        s += "<p class=\"muted\">Hit rate = hits ÷ (hits + misses); requests the cache does not apply to are counted as requests only.</p></section>"
        return s
    }

    // MARK: Tables

    private static func departments(_ o: AdminOverview) -> String {
        var s = "<section><h2>Departments</h2><div class=\"scroll\"><table><thead><tr><th>Department</th><th class=\"num\">Requests</th><th class=\"num\">Hit rate</th><th class=\"num\">Cache hits</th><th class=\"num\">Upstream calls</th><th class=\"num\">Errors</th><th class=\"num\">p50</th><th class=\"num\">p95</th><th class=\"num\">Tokens</th></tr></thead><tbody>"
        for d in o.departments {
            s += "<tr data-department=\"\(HTML.escape(d.department))\"><td>\(HTML.escape(d.department))</td>"
            s += cell("department-requests", HTML.integer(d.requests), "\(d.requests)")
            let cacheable = (o.seriesByDepartment[d.department] ?? []).reduce(0) { $0 + $1.hits + $1.misses }
            s += cell("department-hit-rate", cacheable > 0 ? HTML.percent(fraction: d.cacheHitRate) : "–", HTML.raw(d.cacheHitRate))
            s += cell("department-cache-hits", HTML.integer(d.cacheHits), "\(d.cacheHits)")
            s += cell("department-upstream-calls", HTML.integer(d.upstreamCalls), "\(d.upstreamCalls)")
            s += cell("department-errors", HTML.integer(d.errors), "\(d.errors)")
            s += cell("department-p50", d.requests > 0 ? HTML.ms(d.p50LatencyMs) : "–", HTML.raw(d.p50LatencyMs))
            s += cell("department-p95", d.requests > 0 ? HTML.ms(d.p95LatencyMs) : "–", HTML.raw(d.p95LatencyMs))
            s += cell("department-tokens", HTML.integer(d.totalTokens), "\(d.totalTokens)")
            s += "</tr>"
        }
        return s + "</tbody></table></div></section>"
    }

    /// The fleet view (with Redis): every replica's rollups, labelled as such.
    private static func fleet(_ o: AdminOverview) -> String {
        guard let f = o.fleet else {
            if o.replica != nil {
                return "<section data-scope=\"fleet\"><h2>Fleet</h2><p class=\"error\">The fleet view needs Redis, which does not answer now.</p></section>"
            }
            return ""
        }
        var s = "<section data-scope=\"fleet\"><h2>Fleet — all replicas</h2><p class=\"muted\">From the replicas' per-\(HTML.escape(f.granularity)) rollups in Redis (a summary; latencies are bucket bounds).</p>"
        func table(_ title: String, _ kind: String, _ rows: [AdminOverview.FleetFigures]) -> String {
            var t = "<h3 style=\"font-size:.95rem\">\(HTML.escape(title))</h3><div class=\"scroll\"><table><thead><tr><th>\(HTML.escape(title))</th><th class=\"num\">Requests</th><th class=\"num\">Hit rate</th><th class=\"num\">Hits</th><th class=\"num\">Misses</th><th class=\"num\">Errors</th><th class=\"num\">Tokens</th><th class=\"num\">p50 ≤</th><th class=\"num\">p95 ≤</th></tr></thead><tbody>"
            for r in rows {
                t += "<tr data-fleet-\(kind)=\"\(HTML.escape(r.name))\"><td>\(HTML.escape(r.name))</td>"
                t += cell("fleet-requests", HTML.integer(r.requests), "\(r.requests)")
                t += cell("fleet-hit-rate", r.hits + r.misses > 0 ? HTML.percent(fraction: r.hitRate) : "–", HTML.raw(r.hitRate))
                t += cell("fleet-hits", HTML.integer(r.hits), "\(r.hits)")
                t += cell("fleet-misses", HTML.integer(r.misses), "\(r.misses)")
                t += cell("fleet-errors", HTML.integer(r.errors), "\(r.errors)")
                t += cell("fleet-tokens", HTML.integer(r.tokens), "\(r.tokens)")
                t += cell("fleet-p50", r.requests > 0 ? HTML.ms(Double(r.p50LatencyMs)) : "–", "\(r.p50LatencyMs)")
                t += cell("fleet-p95", r.requests > 0 ? HTML.ms(Double(r.p95LatencyMs)) : "–", "\(r.p95LatencyMs)")
                t += "</tr>"
            }
            return t + "</tbody></table></div>"
        }
        s += table("Replica", "replica", [f.total] + f.replicas)
        s += table("Department", "department", f.departments)
        s += table("Instance", "instance", f.instances)
        return s + "</section>"
    }

    private static func cell(_ metric: String, _ text: String, _ raw: String) -> String {
        "<td class=\"num\" data-metric=\"\(metric)\" data-value=\"\(raw)\">\(text)</td>"
    }

    private static func quotas(_ o: AdminOverview, zone: TimeZone) -> String {
        var s = "<section><h2>Quota usage</h2><div class=\"quotas\">"
        for q in o.quotas {
            s += "<div data-department=\"\(HTML.escape(q.department))\"><h3 style=\"font-size:.95rem;margin:.2rem 0\">\(HTML.escape(q.department))</h3>"
            if q.meters.isEmpty {
                s += "<p class=\"muted\">No quota.</p>"
            }
            for m in q.meters {
                let width = min(100, max(0, m.usedPercent))
                let level = m.usedPercent >= 100 ? "over" : m.usedPercent >= 80 ? "high" : ""
                s += "<div class=\"meter\" data-metric=\"quota-used\" data-department=\"\(HTML.escape(q.department))\" data-meter=\"\(m.meter)\" data-value=\"\(m.used)\" data-limit=\"\(m.limit)\">"
                s += "<div class=\"label\"><span>\(HTML.escape(meterLabel(m.meter)))</span><span>\(HTML.integer(m.used)) / \(HTML.integer(m.limit)) · \(HTML.percent(m.usedPercent))</span></div>"
                s += "<div class=\"bar\" role=\"meter\" aria-valuemin=\"0\" aria-valuemax=\"\(m.limit)\" aria-valuenow=\"\(m.used)\"><span class=\"\(level)\" style=\"width:\(String(format: "%.1f", width))%\"></span></div>"
                s += "<div class=\"muted\" style=\"font-size:.75rem\">resets \(HTML.escape(time(m.resetsMs, zone, seconds: false)))</div></div>"
            }
            if !q.meters.isEmpty {
                s += "<div class=\"muted\" style=\"font-size:.75rem\" data-metric=\"quota-source\" data-department=\"\(HTML.escape(q.department))\" data-value=\"\(q.source)\">counters: \(q.source == "redis" ? "shared with the other replicas (Redis)" : "this replica")</div>"
            }
            if let tokens = q.ledgerMonthTokens {
                s += "<div class=\"muted\" style=\"font-size:.8rem\" data-metric=\"ledger-month-tokens\" data-department=\"\(HTML.escape(q.department))\" data-value=\"\(tokens)\">ledger, this month: \(HTML.integer(tokens)) tokens</div>"
            }
            s += "</div>"
        }
        return s + "</div><p class=\"muted\">Live counters of the current calendar windows: shared by the replicas through Redis when it is configured and answering, else this replica's own.</p></section>"
    }

    private static func meterLabel(_ meter: String) -> String {
        switch meter {
        case "requests_per_minute": "requests this minute"
        case "tokens_per_minute": "tokens this minute"
        case "tokens_per_day": "tokens today"
        case "tokens_per_month": "tokens this month"
        default: meter
        }
    }

    private static func instances(_ o: AdminOverview) -> String {
        var s = "<section><h2>Instances</h2><div class=\"scroll\"><table><thead><tr><th>Instance</th><th>Health</th><th class=\"num\">Ejections</th><th class=\"num\">Recent failures</th><th class=\"num\">In flight</th><th>Share per department</th><th class=\"num\">Requests</th><th class=\"num\">p50</th><th class=\"num\">p95</th></tr></thead><tbody>"
        for i in o.instances {
            let (label, css) = i.available ? ("up", "up") : i.ejected ? ("ejected", "ejected") : ("down", "down")
            s += "<tr data-instance=\"\(HTML.escape(i.name))\"><td><b>\(HTML.escape(i.name))</b><br><span class=\"muted mono\">\(HTML.escape(i.pool)) · \(HTML.escape(i.url))</span>"
            if !i.labels.isEmpty {
                s += "<br><span class=\"muted\">\(HTML.escape(i.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")))</span>"
            }
            s += "</td><td><span class=\"badge \(css)\" data-metric=\"instance-health\" data-value=\"\(label)\">\(label)</span>\(i.probeUp ? "" : " <span class=\"muted\">probe down</span>")</td>"
            s += cell("instance-ejections", HTML.integer(i.ejections), "\(i.ejections)")
            s += cell("instance-recent-failures", HTML.integer(i.recentFailures), "\(i.recentFailures)")
            s += cell("instance-in-flight", HTML.integer(i.inFlight), "\(i.inFlight)")
            s += "<td class=\"wrap\">" + (i.shares.isEmpty ? "<span class=\"muted\">unused</span>" : i.shares.map {
                "<span data-metric=\"instance-share\" data-department=\"\(HTML.escape($0.department))\" data-value=\"\(HTML.raw($0.percent))\">\(HTML.escape($0.department)) \(HTML.percent($0.percent))</span>"
            }.joined(separator: "<br>")) + "</td>"
            s += cell("instance-requests", HTML.integer(i.requests), "\(i.requests)")
            s += cell("instance-p50", i.requests > 0 ? HTML.ms(i.p50LatencyMs) : "–", HTML.raw(i.p50LatencyMs))
            s += cell("instance-p95", i.requests > 0 ? HTML.ms(i.p95LatencyMs) : "–", HTML.raw(i.p95LatencyMs))
            s += "</tr>"
        }
        return s + "</tbody></table></div><p class=\"muted\">Requests and latency from the ledger over the window; health, ejections and in-flight live.</p></section>"
    }

    static let promptPreviewShown = 90

    private static func prompts(_ o: AdminOverview) -> String {
        var s = "<section><h2>Most frequently hit prompts</h2>"
        // Say when prompts are not kept, so that an empty list is not read as "no hits".
        if o.promptPreview.global == "off" {
            s += "<p class=\"muted\" data-metric=\"prompt-preview\" data-value=\"off\">Prompt previews are off (prompt_preview: off): the ledger keeps no prompt text"
            let on = o.promptPreview.departments.filter { $0.value != "off" }.keys.sorted()
            s += on.isEmpty ? ".</p>" : ", except for \(HTML.escape(on.joined(separator: ", "))).</p>"
        } else if !o.promptPreview.offDepartments.isEmpty {
            s += "<p class=\"muted\" data-metric=\"prompt-preview\" data-value=\"partly-off\">Prompt previews are off for \(HTML.escape(o.promptPreview.offDepartments.joined(separator: ", "))).</p>"
        }
        if o.topPrompts.isEmpty { return s + "<p class=\"muted\">No cache hits in this window.</p></section>" }
        s += "<ol class=\"prompts\">"
        for p in o.topPrompts {
            s += "<li data-metric=\"top-prompt\" data-value=\"\(p.hits)\" title=\"\(HTML.escape(p.preview))\"><b>\(HTML.integer(p.hits))×</b> <span class=\"mono\">\(HTML.escape(HTML.truncate(p.preview, promptPreviewShown)))</span></li>"
        }
        return s + "</ol></section>"
    }

    private static func errors(_ o: AdminOverview, zone: TimeZone) -> String {
        var s = "<section><h2>Recent errors</h2>"
        if o.recentErrors.isEmpty { return s + "<p class=\"muted\">None.</p></section>" }
        s += "<div class=\"scroll\"><table><thead><tr><th>Time</th><th>Department</th><th>Instance</th><th class=\"num\">Status</th><th>Request id</th></tr></thead><tbody>"
        for e in o.recentErrors {
            s += "<tr data-metric=\"recent-error\" data-value=\"\(e.status)\"><td>\(HTML.escape(time(e.timeMs, zone, seconds: true)))</td><td>\(HTML.escape(e.department))</td>"
            s += "<td>\(HTML.escape(e.instance ?? "–"))</td><td class=\"num\">\(e.status)</td><td class=\"mono\">\(HTML.escape(HTML.truncate(e.requestID, 40)))</td></tr>"
        }
        return s + "</tbody></table></div></section>"
    }

    // MARK: Time

    private static func formatter(_ format: String, _ zone: TimeZone) -> DateFormatter {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = zone
        f.dateFormat = format
        return f
    }

    static func time(_ ms: Int64, _ zone: TimeZone, seconds: Bool) -> String {
        formatter(seconds ? "yyyy-MM-dd HH:mm:ss" : "yyyy-MM-dd HH:mm", zone).string(from: Date(unixMs: ms))
    }

    private static func axisTime(_ ms: Int64, _ zone: TimeZone, window: String) -> String {
        formatter(window == AdminWindow.week.rawValue ? "EEE d MMM" : "HH:mm", zone).string(from: Date(unixMs: ms))
    }
}
