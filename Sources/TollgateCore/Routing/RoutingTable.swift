/// The immutable routing table built from one configuration: instances, pools, departments
/// with their effective per-instance weights, and the key table. Event loops read it through an
/// atomically swapped reference; a reload builds a new one and in-flight requests keep theirs.
public final class RoutingTable: Sendable {
    public struct Instance: Sendable, Equatable {
        public let index: Int
        public let name: String
        public let pool: Int
        public let url: UpstreamURL
        public let labels: [String: String]
        public let weight: Int
        public let maxInFlight: Int
        public let apiKey: String?
        /// Stable identity across reloads: same name and URL keep their health state.
        public let identity: String
        /// The `Host` header of requests sent to it (built once, not per request).
        public let hostHeader: String

        init(index: Int, name: String, pool: Int, url: UpstreamURL, labels: [String: String], weight: Int, maxInFlight: Int, apiKey: String?) {
            self.index = index
            self.name = name
            self.pool = pool
            self.url = url
            self.labels = labels
            self.weight = weight
            self.maxInFlight = maxInFlight
            self.apiKey = apiKey
            self.identity = "\(name)|\(url)"
            self.hostHeader = url.hostHeader
        }
    }

    public struct Pool: Sendable, Equatable {
        public let name: String
        public let models: [String]
        public let policy: BalancingPolicy
        public let instances: [Int]
    }

    /// One instance a department may use in a pool, with its effective weight.
    public struct Candidate: Sendable, Equatable {
        public let instance: Int
        public let weight: Int
    }

    public struct Department: Sendable, Equatable {
        public let index: Int
        public let name: String
        /// Candidates per pool index.
        public let candidates: [[Candidate]]
        /// What the ledger keeps of this department's prompts (its own `prompt_preview`, else
        /// the global one), resolved once per table: apply it with `PromptPrivacy.preview`.
        public let promptPreview: PromptPreviewPolicy
        /// Its lane when the instances are full, and its weight inside that lane.
        public let lane: Lane
        public let queueWeight: Int
    }

    public let configuration: GatewayConfiguration
    public let generation: Int
    public let instances: [Instance]
    public let pools: [Pool]
    public let departments: [Department]
    public let anonymousDepartment: Int?
    private let modelIndex: [String: Int]
    private let keyIndex: [KeyDigest: Int]

    /// Builds the table; the configuration must have passed `ConfigurationLoader.validate`.
    public init(configuration: GatewayConfiguration, generation: Int = 1) {
        self.configuration = configuration
        self.generation = generation
        var instances: [Instance] = []
        var pools: [Pool] = []
        var modelIndex: [String: Int] = [:]
        for (p, pool) in configuration.pools.enumerated() {
            var members: [Int] = []
            for inst in pool.instances {
                members.append(instances.count)
                instances.append(Instance(
                    index: instances.count, name: inst.name, pool: p, url: inst.url, labels: inst.labels,
                    weight: inst.weight, maxInFlight: inst.maxInFlight > 0 ? inst.maxInFlight : pool.maxInFlight, apiKey: inst.apiKey))
            }
            pools.append(Pool(name: pool.name, models: pool.models, policy: pool.policy, instances: members))
            for model in pool.models where modelIndex[model] == nil { modelIndex[model] = p }
        }
        var departments: [Department] = []
        var keyIndex: [KeyDigest: Int] = [:]
        for (d, dept) in configuration.departments.enumerated() {
            let candidates = pools.map { pool in
                Self.effectiveWeights(route: dept.route, pool: pool.instances.map { instances[$0] })
            }
            departments.append(Department(index: d, name: dept.name, candidates: candidates,
                                          promptPreview: dept.promptPreview ?? configuration.promptPreview,
                                          lane: dept.priority, queueWeight: dept.queueWeight))
            for key in dept.keys {
                if let digest = KeyDigest(hex: key.sha256) { keyIndex[digest] = d }
            }
        }
        self.instances = instances
        self.pools = pools
        self.departments = departments
        self.modelIndex = modelIndex
        self.keyIndex = keyIndex
        self.anonymousDepartment = configuration.auth.anonymousDepartment.flatMap { name in
            departments.firstIndex { $0.name == name }
        }
    }

    /// Pool serving `model`, if any.
    public func pool(forModel model: String) -> Int? { modelIndex[model] }

    /// Department a presented key belongs to, if any. The lookup hashes the key first, so its
    /// time does not depend on how much of a stored key the presented one shares.
    public func department(forKey digest: KeyDigest) -> Int? { keyIndex[digest] }

    public func department(named name: String) -> Int? { departments.firstIndex { $0.name == name } }

    /// Effective integer weights of one department over one pool's instances.
    ///
    /// Each route group receives its weight's share of the traffic; inside a group the share is
    /// split by instance weight. An instance belongs to the first group it matches; instances
    /// matching no group are not used. Groups with no instance in this pool drop out and the
    /// others' shares are renormalised. No route: every instance by its own weight.
    static func effectiveWeights(route: [RouteGroup], pool: [Instance]) -> [Candidate] {
        guard !route.isEmpty else {
            return pool.map { Candidate(instance: $0.index, weight: $0.weight) }
        }
        var groupOf: [Int?] = pool.map { inst in route.firstIndex { $0.matches(inst.labels) } }
        var groupSum = Array(repeating: 0, count: route.count)
        for (i, g) in groupOf.enumerated() { if let g { groupSum[g] += pool[i].weight } }
        for (i, g) in groupOf.enumerated() where g != nil && route[g!].weight == 0 { groupOf[i] = nil }
        let sums = groupSum.enumerated().filter { $0.element > 0 && route[$0.offset].weight > 0 }.map(\.element)
        let common = sums.reduce(1) { lcm($0, $1) }
        var result: [Candidate] = []
        for (i, g) in groupOf.enumerated() {
            guard let g else { continue }
            result.append(Candidate(instance: pool[i].index, weight: route[g].weight * pool[i].weight * (common / groupSum[g])))
        }
        let divisor = result.reduce(0) { gcd($0, $1.weight) }
        if divisor > 1 { result = result.map { Candidate(instance: $0.instance, weight: $0.weight / divisor) } }
        return result
    }

    /// The resolved table as text, for `tollgate check`.
    public func render() -> String {
        var out = "pools:\n"
        for pool in pools {
            out += "  \(pool.name) (\(pool.policy.rawValue)) serves \(pool.models.joined(separator: ", "))\n"
            for i in pool.instances {
                let inst = instances[i]
                let labels = inst.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
                out += "    \(inst.name)  \(inst.url)  weight \(inst.weight)  labels {\(labels)}"
                out += inst.maxInFlight > 0 ? "  max_in_flight \(inst.maxInFlight)\n" : "\n"
            }
        }
        if instances.contains(where: { $0.maxInFlight > 0 }) {
            // What happens when those limits are reached (README "When the GPUs are full").
            let a = configuration.admission
            func text(_ d: Duration) -> String {
                let ms = d.milliseconds
                return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(ms)ms"
            }
            let lanes = Lane.allCases.map { "\($0.name) \(text(a[$0].timeout)) / \(a[$0].maxQueue)" }.joined(separator: ", ")
            out += "when full, requests wait (timeout / max_queue): \(lanes); min share \(a.minSharePerMille / 10)%"
            out += a.reserveWindow == .zero ? "; no slots kept for higher lanes" : "; slots kept for higher lanes' peak of the last \(text(a.reserveWindow))"
            out += "; retry budget \(configuration.retry.budgetPerMille / 10)% (min \(configuration.retry.minRetries))\n"
        }
        out += "departments:\n"
        for dept in departments {
            let keys = configuration.departments[dept.index].keys.count
            out += "  \(dept.name) (\(keys) key\(keys == 1 ? "" : "s"))"
            out += dept.lane == .standard && dept.queueWeight == 1 ? "\n" : "  priority \(dept.lane.name), queue weight \(dept.queueWeight)\n"
            for (p, candidates) in dept.candidates.enumerated() {
                let total = candidates.reduce(0) { $0 + $1.weight }
                let shares = candidates.map { c -> String in
                    let pct = total == 0 ? 0 : Double(c.weight) * 100 / Double(total)
                    return "\(instances[c.instance].name) \(formatPercent(pct))"
                }
                out += "    \(pools[p].name): \(shares.joined(separator: ", "))\n"
            }
        }
        if let a = anonymousDepartment { out += "requests without a key go to: \(departments[a].name)\n" }
        return out
    }
}

private func formatPercent(_ v: Double) -> String {
    let tenths = Int((v * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)%"
}

func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
func lcm(_ a: Int, _ b: Int) -> Int { a / gcd(a, b) * b }
