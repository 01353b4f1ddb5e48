import Foundation

/// Renderers for `tollgate report --format table|csv|json`.
extension Reports {
    /// An aligned text table, with a total line when there is more than one department
    /// (its hit rate and percentiles are left blank: they cannot be derived from the lines above).
    public static func table(_ reports: [DepartmentReport]) -> String {
        let header = ["DEPARTMENT", "REQUESTS", "PROMPT", "COMPLETION", "TOTAL TOKENS", "CACHE HITS",
                      "HIT RATE", "ERRORS", "P50 MS", "P95 MS", "UPSTREAM", "QUOTA USED"]
        var rows = reports.map { r in
            [r.department, "\(r.requests)", "\(r.promptTokens)", "\(r.completionTokens)", "\(r.totalTokens)",
             "\(r.cacheHits)", percent(r.cacheHitRate * 100), "\(r.errors)", decimal(r.p50LatencyMs),
             decimal(r.p95LatencyMs), "\(r.upstreamCalls)", r.quotaUsedPercent.map(percent) ?? "-"]
        }
        if reports.count > 1 {
            func sum(_ value: (DepartmentReport) -> Int) -> Int { reports.reduce(0) { $0 + value($1) } }
            rows.append(["TOTAL", "\(sum(\.requests))", "\(sum(\.promptTokens))", "\(sum(\.completionTokens))",
                         "\(sum(\.totalTokens))", "\(sum(\.cacheHits))", "",
                         "\(sum(\.errors))", "", "", "\(sum(\.upstreamCalls))", ""])
        }
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.indices.map { column in
                let cell = row[column]
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return column == 0 ? cell + pad : pad + cell  // names left, numbers right
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }

    /// RFC 4180 CSV with a header line; empty cells for absent quota figures.
    public static func csv(_ reports: [DepartmentReport]) -> String {
        var lines = ["department,requests,prompt_tokens,completion_tokens,total_tokens,cache_hits,cache_hit_rate,errors,p50_latency_ms,p95_latency_ms,upstream_calls,token_limit,quota_used_percent"]
        for r in reports {
            lines.append([
                csvField(r.department), "\(r.requests)", "\(r.promptTokens)", "\(r.completionTokens)",
                "\(r.totalTokens)", "\(r.cacheHits)", String(format: "%.4f", r.cacheHitRate), "\(r.errors)",
                String(format: "%.3f", r.p50LatencyMs), String(format: "%.3f", r.p95LatencyMs),
                "\(r.upstreamCalls)", r.tokenLimit.map { "\($0)" } ?? "",
                r.quotaUsedPercent.map { String(format: "%.2f", $0) } ?? "",
            ].joined(separator: ","))
        }
        return lines.joined(separator: "\r\n") + "\r\n"
    }

    /// A JSON array of the reports (keys as in `DepartmentReport`, sorted; absent quota
    /// figures omitted).
    public static func json(_ reports: [DepartmentReport]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        // Encoding plain structs of finite numbers cannot fail.
        let data = (try? encoder.encode(reports)) ?? Data("[]".utf8)
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    private static func csvField(_ text: String) -> String {
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    private static func percent(_ value: Double) -> String { String(format: "%.1f%%", value) }
    private static func decimal(_ value: Double) -> String { String(format: "%.1f", value) }
}
