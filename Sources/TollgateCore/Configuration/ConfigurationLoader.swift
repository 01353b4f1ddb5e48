import Foundation
import Yams

/// Reads the gateway configuration from a YAML file, or from every `*.yaml`/`*.yml` file of a
/// directory such as `routes/` (sections merge; `pools` and `departments` concatenate; any
/// other section may appear in one file only).
///
/// Unknown keys are errors. Every error names the file, the key and what is wrong, and all
/// errors of a load are reported together.
public enum ConfigurationLoader {
    public static func load(path: String) throws -> GatewayConfiguration {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ConfigurationErrors(errors: [ConfigurationError(file: path, key: "", message: "no such file or directory")])
        }
        var files: [String]
        if isDirectory.boolValue {
            let names = try FileManager.default.contentsOfDirectory(atPath: path)
            files = names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted().map { (path as NSString).appendingPathComponent($0) }
            if files.isEmpty {
                throw ConfigurationErrors(errors: [ConfigurationError(file: path, key: "", message: "no .yaml files in this directory")])
            }
        } else {
            files = [path]
        }
        var sources: [(file: String, text: String)] = []
        for file in files {
            guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
                throw ConfigurationErrors(errors: [ConfigurationError(file: file, key: "", message: "cannot read the file as UTF-8")])
            }
            sources.append((file, text))
        }
        return try parse(sources)
    }

    /// Parses configuration text; `file` names it in errors.
    public static func parse(_ text: String, file: String = "<config>") throws -> GatewayConfiguration {
        try parse([(file, text)])
    }

    static func parse(_ sources: [(file: String, text: String)]) throws -> GatewayConfiguration {
        var reader = Reader()
        var config = GatewayConfiguration()
        var sectionOwner: [String: String] = [:]
        for (file, text) in sources {
            let root: Node?
            do {
                root = try Yams.compose(yaml: text)
            } catch {
                reader.errors.append(ConfigurationError(file: file, key: "", message: "not valid YAML: \(error)"))
                continue
            }
            guard let root else { continue }
            guard var map = reader.map(root, file: file, key: "") else { continue }
            for section in map.keys where !["pools", "departments"].contains(section) {
                if let owner = sectionOwner[section] {
                    reader.errors.append(ConfigurationError(file: file, key: section, line: map.line(section), message: "already set in \(owner)"))
                }
                sectionOwner[section] = file
            }
            reader.read(&map, into: &config)
            reader.finish(map)
        }
        if reader.errors.isEmpty {
            reader.errors += validate(config, file: sources.count == 1 ? sources[0].file : "routes")
        }
        if !reader.errors.isEmpty { throw ConfigurationErrors(errors: reader.errors) }
        return config
    }

    /// Checks that hold across sections: names unique, routes match instances, keys well formed.
    public static func validate(_ config: GatewayConfiguration, file: String) -> [ConfigurationError] {
        var errors: [ConfigurationError] = []
        func fail(_ key: String, _ message: String) { errors.append(ConfigurationError(file: file, key: key, message: message)) }
        if config.pools.isEmpty { fail("pools", "at least one pool with one instance is needed") }
        var poolNames = Set<String>(), instanceNames = Set<String>(), models = [String: String]()
        for (p, pool) in config.pools.enumerated() {
            if !poolNames.insert(pool.name).inserted { fail("pools[\(p)].name", "duplicate pool name \"\(pool.name)\"") }
            if pool.models.isEmpty { fail("pools[\(p)].models", "a pool serves at least one model") }
            for model in pool.models {
                if let other = models[model] { fail("pools[\(p)].models", "model \"\(model)\" is already served by pool \"\(other)\"") }
                models[model] = pool.name
            }
            if pool.instances.isEmpty { fail("pools[\(p)].instances", "a pool needs at least one instance") }
            for (i, instance) in pool.instances.enumerated() {
                if !instanceNames.insert(instance.name).inserted { fail("pools[\(p)].instances[\(i)].name", "duplicate instance name \"\(instance.name)\"") }
            }
        }
        var departmentNames = Set<String>(), keyHashes = Set<String>()
        for (d, department) in config.departments.enumerated() {
            if !departmentNames.insert(department.name).inserted { fail("departments[\(d)].name", "duplicate department \"\(department.name)\"") }
            for (k, key) in department.keys.enumerated() {
                let hex = key.sha256
                if hex.count != 64 || !hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) {
                    fail("departments[\(d)].keys[\(k)].sha256", "must be 64 lower-case hex digits (the SHA-256 of the key)")
                } else if !keyHashes.insert(hex).inserted {
                    fail("departments[\(d)].keys[\(k)].sha256", "this key is already listed")
                }
            }
            if !department.route.isEmpty {
                for pool in config.pools {
                    let matched = department.route.contains { group in pool.instances.contains { group.matches($0.labels) } }
                    if !matched {
                        fail("departments[\(d)].route", "no route group matches any instance of pool \"\(pool.name)\"")
                    }
                }
            }
        }
        if let anonymous = config.auth.anonymousDepartment, !departmentNames.contains(anonymous) {
            fail("auth.anonymous_department", "no department named \"\(anonymous)\"")
        }
        return errors
    }
}

extension RouteGroup {
    public func matches(_ labels: [String: String]) -> Bool {
        match.allSatisfy { labels[$0.key] == $0.value }
    }
}

// MARK: - Reading YAML nodes

/// A mapping being read: its keys are consumed as they are read; what is left is unknown.
struct MapReader {
    let file: String
    let path: String
    let line: Int?
    var entries: [(key: String, value: Node)]
    var consumed = Set<String>()

    var keys: [String] { entries.map(\.key) }
    func line(_ key: String) -> Int? { entries.first { $0.key == key }?.value.mark?.line }
    func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    mutating func take(_ key: String) -> Node? {
        guard let entry = entries.first(where: { $0.key == key }) else { return nil }
        consumed.insert(key)
        if case .scalar(let s) = entry.value, s.style == .plain, ["null", "~", ""].contains(s.string) { return nil }
        return entry.value
    }
}

struct Reader {
    var errors: [ConfigurationError] = []

    mutating func fail(_ file: String, _ key: String, _ node: Node?, _ message: String) {
        errors.append(ConfigurationError(file: file, key: key, line: node?.mark?.line, message: message))
    }

    /// An error about `key` of mapping `m`, at the line where that key is written (or the
    /// mapping's line when the key is missing).
    mutating func fail(_ m: MapReader, _ key: String, _ message: String) {
        errors.append(ConfigurationError(file: m.file, key: m.keyPath(key), line: m.line(key) ?? m.line, message: message))
    }

    mutating func map(_ node: Node, file: String, key: String) -> MapReader? {
        guard case .mapping(let mapping) = node else {
            fail(file, key, node, "expected a mapping of keys to values")
            return nil
        }
        var entries: [(String, Node)] = []
        var seen = Set<String>()
        for (k, v) in mapping {
            guard let name = k.scalar?.string else {
                fail(file, key, k, "keys must be plain strings")
                continue
            }
            if !seen.insert(name).inserted {
                fail(file, key.isEmpty ? name : "\(key).\(name)", k, "key given twice")
                continue
            }
            entries.append((name, v))
        }
        return MapReader(file: file, path: key, line: node.mark?.line, entries: entries)
    }

    mutating func finish(_ map: MapReader) {
        for entry in map.entries where !map.consumed.contains(entry.key) {
            fail(map.file, map.keyPath(entry.key), entry.value, "unknown key")
        }
    }

    mutating func string(_ map: inout MapReader, _ key: String) -> String? {
        guard let node = map.take(key) else { return nil }
        guard case .scalar(let s) = node else {
            fail(map.file, map.keyPath(key), node, "expected a string")
            return nil
        }
        return s.string
    }

    /// A whole number in `min...max`. Every number has an upper bound (`ConfigurationBounds`):
    /// the data plane adds and multiplies them, and a trap there stops every department.
    mutating func int(_ map: inout MapReader, _ key: String, min: Int, max: Int) -> Int? {
        guard let node = map.take(key) else { return nil }
        guard let value = node.int else {
            fail(map.file, map.keyPath(key), node, "expected a whole number")
            return nil
        }
        guard value >= min, value <= max else {
            fail(map.file, map.keyPath(key), node, "must be between \(min) and \(max)")
            return nil
        }
        return value
    }

    /// A share written `10%` or `0.1`, as per mille in `0...max`.
    mutating func perMille(_ map: inout MapReader, _ key: String, max: Int) -> Int? {
        guard let node = map.take(key) else { return nil }
        var text = node.scalar?.string ?? ""
        var scale = 1000.0
        if text.hasSuffix("%") {
            text.removeLast()
            scale = 10
        }
        guard let value = Double(text), value.isFinite, value >= 0, (value * scale).rounded() <= Double(max) else {
            fail(map.file, map.keyPath(key), node, "expected a share between 0% and \(max / 10)% (e.g. 10% or 0.1)")
            return nil
        }
        return Int((value * scale).rounded())
    }

    /// A duration of at most `ConfigurationBounds.maxDuration` (a year).
    mutating func duration(_ map: inout MapReader, _ key: String, allowZero: Bool = false) -> Duration? {
        guard let node = map.take(key) else { return nil }
        guard let text = node.scalar?.string, let value = parseDuration(text), allowZero || value > .zero else {
            fail(map.file, map.keyPath(key), node, allowZero ? "expected a duration such as 500ms, 2s, 1m" : "expected a positive duration such as 500ms, 2s, 1m")
            return nil
        }
        guard value <= ConfigurationBounds.maxDuration else {
            fail(map.file, map.keyPath(key), node, "must be at most 8760h (a year)")
            return nil
        }
        return value
    }

    mutating func stringMap(_ map: inout MapReader, _ key: String) -> [String: String]? {
        guard let node = map.take(key) else { return nil }
        guard var inner = self.map(node, file: map.file, key: map.keyPath(key)) else { return nil }
        var result: [String: String] = [:]
        for entry in inner.entries {
            guard case .scalar(let s) = entry.value else {
                fail(map.file, inner.keyPath(entry.key), entry.value, "label values must be strings or numbers")
                continue
            }
            result[entry.key] = s.string
            inner.consumed.insert(entry.key)
        }
        return result
    }

    mutating func list(_ map: inout MapReader, _ key: String) -> [Node]? {
        guard let node = map.take(key) else { return nil }
        guard case .sequence(let seq) = node else {
            fail(map.file, map.keyPath(key), node, "expected a list")
            return nil
        }
        return Array(seq)
    }

    mutating func section(_ map: inout MapReader, _ key: String, _ body: (inout Reader, inout MapReader) -> Void) {
        guard let node = map.take(key), var inner = self.map(node, file: map.file, key: map.keyPath(key)) else { return }
        body(&self, &inner)
        finish(inner)
    }

    mutating func read(_ map: inout MapReader, into config: inout GatewayConfiguration) {
        section(&map, "listen") { r, m in r.listenAddress(&m, into: &config.listen) }
        section(&map, "admin") { r, m in r.listenAddress(&m, into: &config.admin) }
        if let n = int(&map, "event_loops", min: 0, max: 256) { config.eventLoops = n }
        if let d = duration(&map, "shutdown_grace", allowZero: true) { config.shutdownGrace = d }
        section(&map, "limits") { r, m in
            if let v = r.int(&m, "max_body_bytes", min: 0, max: ConfigurationBounds.maxBytes) { config.limits.maxBodyBytes = v }
            if let v = r.int(&m, "max_header_bytes", min: 256, max: 1 << 20) { config.limits.maxHeaderBytes = v }
            if let v = r.int(&m, "max_header_count", min: 4, max: 10_000) { config.limits.maxHeaderCount = v }
            if let v = r.duration(&m, "header_timeout") { config.limits.headerTimeout = v }
            if let v = r.duration(&m, "body_timeout") { config.limits.bodyTimeout = v }
            if let v = r.duration(&m, "idle_timeout") { config.limits.idleTimeout = v }
            if let v = r.int(&m, "max_connections", min: 1, max: 1_000_000) { config.limits.maxConnections = v }
        }
        section(&map, "timeouts") { r, m in
            if let v = r.duration(&m, "connect") { config.timeouts.connect = v }
            if let v = r.duration(&m, "per_try") { config.timeouts.perTry = v }
            if let v = r.duration(&m, "request") { config.timeouts.request = v }
        }
        section(&map, "retry") { r, m in
            if let v = r.int(&m, "attempts", min: 1, max: 10) { config.retry.attempts = v }
            if let v = r.perMille(&m, "budget", max: 1000) { config.retry.budgetPerMille = v }
            if let v = r.int(&m, "min_retries", min: 0, max: ConfigurationBounds.maxCount) { config.retry.minRetries = v }
        }
        section(&map, "admission") { r, m in
            if let v = r.perMille(&m, "min_share", max: 500) { config.admission.minSharePerMille = v }
            if let v = r.duration(&m, "reserve_window", allowZero: true) {
                if v > .seconds(60) {
                    r.fail(m, "reserve_window", "must be at most 60s (slots are kept for a lane's traffic of up to twice that long ago)")
                } else {
                    config.admission.reserveWindow = v
                }
            }
            r.section(&m, "lanes") { r, lanes in
                for lane in Lane.allCases {
                    r.section(&lanes, lane.name) { r, l in
                        if let d = r.duration(&l, "timeout") { config.admission[lane].timeout = d }
                        if let n = r.int(&l, "max_queue", min: 0, max: ConfigurationBounds.maxCount) { config.admission[lane].maxQueue = n }
                    }
                }
            }
        }
        section(&map, "health") { r, m in
            if let v = r.int(&m, "max_fails", min: 0, max: ConfigurationBounds.maxCount) { config.health.maxFails = v }
            if let v = r.duration(&m, "fail_timeout") { config.health.failTimeout = v }
            if let v = r.string(&m, "probe_path") {
                if !v.isEmpty && !v.hasPrefix("/") { r.fail(m, "probe_path", "must start with / (or be empty to disable probing)") }
                config.health.probePath = v
            }
            if let v = r.duration(&m, "probe_interval") { config.health.probeInterval = v }
            if let v = r.duration(&m, "probe_timeout") { config.health.probeTimeout = v }
            if let v = r.int(&m, "unhealthy_threshold", min: 1, max: 1_000) { config.health.unhealthyThreshold = v }
            if let v = r.int(&m, "healthy_threshold", min: 1, max: 1_000) { config.health.healthyThreshold = v }
            if let v = r.string(&m, "metrics_path") {
                if !v.isEmpty && !v.hasPrefix("/") { r.fail(m, "metrics_path", "must start with / (or be empty)") }
                config.health.metricsPath = v
            }
        }
        section(&map, "auth") { r, m in
            config.auth.anonymousDepartment = r.string(&m, "anonymous_department")
            config.auth.adminKeyFile = r.string(&m, "admin_key_file")
        }
        section(&map, "cache") { r, m in r.cachePolicy(&m, into: &config.cache) }
        section(&map, "redis") { r, m in
            if let d = r.duration(&m, "connect_timeout") { config.redis.connect = d }
            if let d = r.duration(&m, "command_timeout") { config.redis.command = d }
        }
        section(&map, "ledger") { r, m in
            if let n = r.int(&m, "max_backlog", min: 1_000, max: 10_000_000) { config.ledger.maxBacklog = n }
            if let d = r.duration(&m, "close_timeout", allowZero: true) { config.ledger.closeTimeout = d }
            if let n = r.int(&m, "max_concurrent_reports", min: 1, max: 64) { config.ledger.maxConcurrentReports = n }
        }
        section(&map, "quotas") { r, m in
            if let zone = r.string(&m, "time_zone") {
                if let tz = TimeZone(identifier: zone) { config.quotas.timeZone = tz } else {
                    r.fail(m, "time_zone", "\"\(zone)\" is not a time zone (e.g. UTC, Europe/Berlin, Asia/Shanghai)")
                }
            }
            if let n = r.int(&m, "default_max_tokens", min: 0, max: ConfigurationBounds.maxTokens) { config.quotas.defaultMaxTokens = n }
            if let d = r.duration(&m, "sync_interval") { config.quotas.syncInterval = d }
            if let text = r.string(&m, "lease") {
                // "1%" or "0.5%": the largest slice a replica leases, of each limit.
                let number = text.hasSuffix("%") ? String(text.dropLast()) : text
                if let value = Double(number.trimmingCharacters(in: .whitespaces)), value.isFinite, value >= 0.01, value <= 50 {
                    config.quotas.lease = QuotaLeasePolicy(percent: value)
                } else {
                    r.fail(m, "lease", "\"\(text)\" is not a percentage between 0.01% and 50% (e.g. 1%)")
                }
            }
        }
        if let policy = promptPreview(&map) { config.promptPreview = policy }
        if let pools = list(&map, "pools") {
            let base = config.pools.count
            for (i, node) in pools.enumerated() {
                if let pool = self.pool(node, file: map.file, key: "pools[\(base + i)]") { config.pools.append(pool) }
            }
        }
        if let departments = list(&map, "departments") {
            let base = config.departments.count
            for (i, node) in departments.enumerated() {
                if let d = department(node, file: map.file, key: "departments[\(base + i)]") { config.departments.append(d) }
            }
        }
    }

    mutating func cachePolicy(_ m: inout MapReader, into policy: inout CachePolicy) {
        if let text = string(&m, "mode") {
            if let mode = CacheMode(rawValue: text) { policy.mode = mode } else {
                fail(m, "mode", "\"\(text)\" is not one of \(CacheMode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
        if let ttl = duration(&m, "ttl") { policy.ttl = ttl }
        if let n = int(&m, "max_entry_bytes", min: 1, max: ConfigurationBounds.maxBytes) { policy.maxEntryBytes = n }
        if let node = m.take("shared") {
            if let b = node.bool { policy.shared = b } else { fail(m, "shared", "expected true or false") }
        }
    }

    /// `prompt_preview: off` (or `false`), or a number of characters, 1…1000.
    mutating func promptPreview(_ m: inout MapReader) -> PromptPreviewPolicy? {
        guard let node = m.take("prompt_preview") else { return nil }
        if let text = node.scalar?.string, text == "off" || text == "false" { return .off }
        guard let n = node.int, (1...PromptPrivacy.maxLength).contains(n) else {
            fail(m, "prompt_preview", "expected off or a number of characters between 1 and \(PromptPrivacy.maxLength)")
            return nil
        }
        return .characters(n)
    }

    mutating func listenAddress(_ m: inout MapReader, into endpoint: inout ListenAddress) {
        if let host = string(&m, "host") { endpoint.host = host }
        if let port = int(&m, "port", min: 0, max: 65535) { endpoint.port = port }
    }

    mutating func name(_ m: inout MapReader) -> String? {
        guard let name = string(&m, "name") else {
            fail(m, "name", "missing (every entry needs a name)")
            return nil
        }
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            fail(m, "name", "\"\(name)\" must be letters, digits, '-', '_' or '.'")
            return nil
        }
        return name
    }

    mutating func pool(_ node: Node, file: String, key: String) -> PoolConfiguration? {
        guard var m = map(node, file: file, key: key) else { return nil }
        defer { finish(m) }
        let name = self.name(&m)
        var models: [String] = []
        if let list = list(&m, "models") {
            for (i, n) in list.enumerated() {
                if let s = n.scalar?.string, !s.isEmpty { models.append(s) } else { fail(file, "\(key).models[\(i)]", n, "expected a model name") }
            }
        } else {
            fail(m, "models", "missing (the model names this pool serves)")
        }
        var policy = BalancingPolicy.roundRobin
        if let text = string(&m, "policy") {
            if let p = BalancingPolicy(rawValue: text) { policy = p } else {
                fail(m, "policy", "\"\(text)\" is not one of \(BalancingPolicy.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
        var instances: [InstanceConfiguration] = []
        if let list = list(&m, "instances") {
            for (i, n) in list.enumerated() {
                if let instance = instance(n, file: file, key: "\(key).instances[\(i)]") { instances.append(instance) }
            }
        } else {
            fail(m, "instances", "missing (the instances of this pool)")
        }
        let maxInFlight = int(&m, "max_in_flight", min: 0, max: ConfigurationBounds.maxCount) ?? 0
        guard let name else { return nil }
        return PoolConfiguration(name: name, models: models, policy: policy, instances: instances, maxInFlight: maxInFlight)
    }

    mutating func instance(_ node: Node, file: String, key: String) -> InstanceConfiguration? {
        guard var m = map(node, file: file, key: key) else { return nil }
        defer { finish(m) }
        let name = self.name(&m)
        var url: UpstreamURL?
        if let text = string(&m, "url") {
            url = UpstreamURL(parsing: text)
            if url == nil { fail(m, "url", "\"\(text)\" is not an http://host:port URL") }
        } else {
            fail(m, "url", "missing (e.g. http://127.0.0.1:8001)")
        }
        let labels = stringMap(&m, "labels") ?? [:]
        let weight = int(&m, "weight", min: 1, max: 1000) ?? 1
        let maxInFlight = int(&m, "max_in_flight", min: 0, max: ConfigurationBounds.maxCount) ?? 0
        let apiKey = string(&m, "api_key")
        if let apiKey, apiKey.isEmpty || !apiKey.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
            // It becomes an `Authorization` header as is: printable ASCII only, no spaces or line breaks.
            fail(m, "api_key", "must be printable ASCII without spaces")
        }
        guard let name, let url else { return nil }
        return InstanceConfiguration(name: name, url: url, labels: labels, weight: weight, maxInFlight: maxInFlight, apiKey: apiKey)
    }

    mutating func department(_ node: Node, file: String, key: String) -> DepartmentConfiguration? {
        guard var m = map(node, file: file, key: key) else { return nil }
        defer { finish(m) }
        let name = self.name(&m)
        var keys: [KeyEntry] = []
        for (i, n) in (list(&m, "keys") ?? []).enumerated() {
            guard var km = map(n, file: file, key: "\(key).keys[\(i)]") else { continue }
            let hash = string(&km, "sha256")
            let label = string(&km, "label") ?? "key-\(i)"
            if hash == nil { fail(file, "\(key).keys[\(i)].sha256", n, "missing") }
            finish(km)
            if let hash { keys.append(KeyEntry(sha256: hash, label: label)) }
        }
        var route: [RouteGroup] = []
        for (i, n) in (list(&m, "route") ?? []).enumerated() {
            guard var rm = map(n, file: file, key: "\(key).route[\(i)]") else { continue }
            let match = stringMap(&rm, "match") ?? [:]
            let weight = int(&rm, "weight", min: 0, max: 1000)
            if weight == nil && !rm.consumed.contains("weight") { fail(file, "\(key).route[\(i)].weight", n, "missing") }
            finish(rm)
            if let weight { route.append(RouteGroup(match: match, weight: weight)) }
        }
        var cache: CachePolicy?
        if m.keys.contains("cache") {
            var policy = CachePolicy()
            section(&m, "cache") { r, c in r.cachePolicy(&c, into: &policy) }
            cache = policy
        }
        var quota = QuotaLimits()
        section(&m, "quota") { r, q in
            quota.requestsPerMinute = r.int(&q, "requests_per_minute", min: 1, max: ConfigurationBounds.maxTokens)
            quota.tokensPerMinute = r.int(&q, "tokens_per_minute", min: 1, max: ConfigurationBounds.maxTokens)
            quota.tokensPerDay = r.int(&q, "tokens_per_day", min: 1, max: ConfigurationBounds.maxTokens)
            quota.tokensPerMonth = r.int(&q, "tokens_per_month", min: 1, max: ConfigurationBounds.maxTokens)
        }
        if !route.isEmpty && route.allSatisfy({ $0.weight == 0 }) {
            fail(m, "route", "at least one group needs a weight above 0")
        }
        let promptPreview = self.promptPreview(&m)
        var priority = Lane.standard
        if let text = string(&m, "priority") {
            if let lane = Lane(name: text), text == lane.name { priority = lane } else {
                fail(m, "priority", "\"\(text)\" is not one of interactive, standard, batch")
            }
        }
        let queueWeight = int(&m, "queue_weight", min: 1, max: 1000) ?? 1
        guard let name else { return nil }
        return DepartmentConfiguration(name: name, keys: keys, route: route, quota: quota, cache: cache, promptPreview: promptPreview,
                                       priority: priority, queueWeight: queueWeight)
    }
}

/// Upper bounds of the numbers a configuration may hold.
public enum ConfigurationBounds {
    /// Quota limits and reservations, in tokens or requests (2^40, about 10^12).
    public static let maxTokens = 1 << 40
    /// Byte sizes (bodies, cache entries): 1 GiB.
    public static let maxBytes = 1 << 30
    /// Counts (failures, requests in flight).
    public static let maxCount = 1_000_000
    /// Durations (timeouts, TTLs, intervals): a year.
    public static let maxDuration = Duration.seconds(365 * 86_400)
}

