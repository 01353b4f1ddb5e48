import Atomics
import Foundation
import Hummingbird
import NIOCore
import TollgateCore
import TollgateDataPlane
import TollgateLedger

/// `GET /metrics`: the data plane's counters, histograms and live state in the Prometheus
/// text format. Documented in README.md ("Metrics").
enum MetricsEndpoint {
    static func render(dataPlane: DataPlane, writer: UsageWriter?) async throws -> String {
        let m = await dataPlane.metricsSnapshot()
        let health = try await dataPlane.monitor.snapshot().get()
        let state = m.state
        let table = state.table
        var p = PrometheusText()

        p.single("tollgate_http_requests_total", "counter", "Request heads received by the data plane, every path and outcome.", m.requestHeads)

        p.family("tollgate_requests_total", "counter",
                 "Authenticated requests (one per ledger row) by department, answering instance (empty when none) and status.")
        var byRequest: [[String]: Int] = [:]
        var byCache: [[String]: Int] = [:]
        for (key, count) in m.requests {
            byRequest[[key.department, key.instance, String(key.status)], default: 0] += count
            byCache[[key.department, key.cache.rawValue], default: 0] += count
        }
        for (labels, count) in byRequest.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            p.sample("tollgate_requests_total", [("department", labels[0]), ("instance", labels[1]), ("status", labels[2])], count)
        }
        p.family("tollgate_cache_requests_total", "counter",
                 "Authenticated requests by department and cache outcome: hit, miss, bypass (cacheable but skipped), off (not cacheable).")
        for department in Set(byCache.keys.map { $0[0] }).sorted() {
            for outcome in CacheOutcome.allCases {
                p.sample("tollgate_cache_requests_total", [("department", department), ("outcome", outcome.rawValue)],
                         byCache[[department, outcome.rawValue]] ?? 0)
            }
        }
        for (outcome, name) in [(CacheOutcome.hit, "hits"), (.miss, "misses"), (.bypass, "bypasses")] {
            let total = byCache.filter { $0.key[1] == outcome.rawValue }.values.reduce(0, +)
            p.single("tollgate_cache_\(name)_total", "counter", "Requests with cache outcome \(outcome.rawValue), all departments.", total)
        }

        p.histogram("tollgate_request_duration_seconds", "Authenticated requests: from the request head to the end of the answer.", m.requestDuration)
        p.histogram("tollgate_gateway_overhead_seconds",
                    "Forwarded requests: from the request head to the request written to the instance that answered (body, authentication, admission, balancing, connecting, failed tries).",
                    m.gatewayOverhead)
        p.histogram("tollgate_upstream_latency_seconds", "Forwarded requests: from writing to the answering instance to the end of its answer.", m.upstreamLatency)
        p.histogram("tollgate_time_to_first_token_seconds", "Streams: from the request head to the first chunk of the answer.", m.timeToFirstToken)

        p.single("tollgate_upstream_requests_total", "counter", "Tries sent to instances (a retried request counts each try).", m.upstreamRequests)
        p.single("tollgate_upstream_retries_total", "counter", "Tries after the first.", m.retries)
        p.single("tollgate_upstream_retries_denied_total", "counter", "Retries not sent because the retry budget was spent (retry.budget).", m.retriesDenied)
        p.single("tollgate_upstream_failures_total", "counter", "Failed tries (connect error, timeout, 502/503/504, closed).", m.upstreamFailures)
        p.single("tollgate_no_instance_total", "counter", "Requests for which no instance was available.", m.noInstance)
        p.single("tollgate_client_errors_total", "counter", "Requests refused before forwarding (bad input, unknown key, oversize, ...).", m.clientErrors)
        p.single("tollgate_quota_rejections_total", "counter", "Requests refused with 429 because a quota was reached.", m.quotaRejections)
        p.single("tollgate_quota_fallbacks_total", "counter", "Admissions counted locally because Redis could not answer.", m.quotaFallbacks)
        p.single("tollgate_active_connections", "gauge", "Open client connections.", m.activeConnections)
        p.single("tollgate_connections_refused_total", "counter", "Client connections refused at limits.max_connections.", m.connectionsRefused)
        p.single("tollgate_active_requests", "gauge", "Requests being forwarded now.", m.activeRequests)

        // The waiting line (README "When the GPUs are full"): per lane and department.
        let queueKeys = m.queues.keys.sorted()
        p.family("tollgate_queue_waiting", "gauge", "Requests waiting for a free instance slot, by lane and department.")
        for key in queueKeys { p.sample("tollgate_queue_waiting", [("lane", key.lane.name), ("department", key.department)], m.queues[key]!.waiting) }
        p.family("tollgate_queue_dispatched_total", "counter", "Requests that got an instance slot after waiting.")
        for key in queueKeys { p.sample("tollgate_queue_dispatched_total", [("lane", key.lane.name), ("department", key.department)], m.queues[key]!.dispatched) }
        p.family("tollgate_queue_shed_total", "counter",
                 "Requests refused with 503 and Retry-After by the waiting line: reason timeout (the lane's queue timeout passed) or full (its bound).")
        for key in queueKeys {
            p.sample("tollgate_queue_shed_total", [("lane", key.lane.name), ("department", key.department), ("reason", "timeout")], m.queues[key]!.timedOut)
            p.sample("tollgate_queue_shed_total", [("lane", key.lane.name), ("department", key.department), ("reason", "full")], m.queues[key]!.full)
        }
        p.family("tollgate_queue_wait_seconds", "histogram", "Time requests waited for a free instance slot (dispatched or timed out), by lane and department.")
        for key in queueKeys {
            let h = m.queues[key]!.wait
            let labels = [("lane", key.lane.name), ("department", key.department)]
            for (le, count) in h.cumulative {
                p.sample("tollgate_queue_wait_seconds_bucket", labels + [("le", le.map(PrometheusText.number) ?? "+Inf")], count)
            }
            p.sample("tollgate_queue_wait_seconds_sum", labels, Double(h.sumMicros) / 1e6)
            p.sample("tollgate_queue_wait_seconds_count", labels, h.count)
        }
        p.family("tollgate_queue_limit", "gauge", "Requests a lane may hold waiting (admission.lanes.*.max_queue), over all event loops.")
        for lane in Lane.allCases { p.sample("tollgate_queue_limit", [("lane", lane.name)], table.configuration.admission[lane].maxQueue) }
        p.family("tollgate_instance_max_in_flight", "gauge", "Concurrent requests allowed to the instance (0: unlimited), over all event loops.")
        for inst in table.instances {
            p.sample("tollgate_instance_max_in_flight", [("instance", inst.name), ("pool", table.pools[inst.pool].name)], inst.maxInFlight)
        }
        p.family("tollgate_instance_reported_waiting", "gauge", "Requests waiting inside the instance, as its metrics said at the last probe (health.metrics_path).")
        for inst in table.instances {
            if let w = state.availability[inst.index].load?.waiting {
                p.sample("tollgate_instance_reported_waiting", [("instance", inst.name), ("pool", table.pools[inst.pool].name)], w)
            }
        }
        p.family("tollgate_instance_reported_kv_cache_usage", "gauge", "KV-cache usage (0-1) the instance reported at the last probe.")
        for inst in table.instances {
            if let u = state.availability[inst.index].load?.kvCacheUsage {
                p.sample("tollgate_instance_reported_kv_cache_usage", [("instance", inst.name), ("pool", table.pools[inst.pool].name)], u)
            }
        }

        let now = NIODeadline.now().uptimeNanoseconds
        let instanceLabels = table.instances.map { [("instance", $0.name), ("pool", table.pools[$0.pool].name)] }
        p.family("tollgate_instance_up", "gauge", "1 when the instance may receive requests (probes up, not ejected).")
        for inst in table.instances { p.sample("tollgate_instance_up", instanceLabels[inst.index], state.availability[inst.index].isAvailable(at: now) ? 1 : 0) }
        p.family("tollgate_instance_probe_up", "gauge", "1 when active health probes consider the instance up.")
        for inst in table.instances { p.sample("tollgate_instance_probe_up", instanceLabels[inst.index], state.availability[inst.index].probeUp ? 1 : 0) }
        p.family("tollgate_instance_ejected", "gauge", "1 while the instance is ejected after failures.")
        for inst in table.instances { p.sample("tollgate_instance_ejected", instanceLabels[inst.index], now < state.availability[inst.index].ejectedUntil ? 1 : 0) }
        p.family("tollgate_instance_ejections_total", "counter", "Times the instance was ejected.")
        for inst in table.instances { p.sample("tollgate_instance_ejections_total", instanceLabels[inst.index], health[inst.identity]?.ejections ?? 0) }
        p.family("tollgate_instance_in_flight", "gauge", "Requests in flight to the instance, over all event loops.")
        for inst in table.instances {
            p.sample("tollgate_instance_in_flight", instanceLabels[inst.index], m.inFlight.indices.contains(inst.index) ? m.inFlight[inst.index] : 0)
        }

        var calendar = QuotaCalendar(timeZone: state.quotas.settings.timeZone)
        let windows = calendar.current(atMs: wallClockMs())
        p.family("tollgate_quota_limit", "gauge", "Configured quota limits by department and meter.")
        var used: [(labels: [(String, String)], value: Int)] = []
        for d in table.departments {
            let limits = state.quotas.departments[d.index].limits
            let usage = state.quotas.usage(department: d.index, at: windows)
            for meter in QuotaMeter.allCases {
                guard let limit = limits.limit(meter) else { continue }
                let labels = [("department", d.name), ("meter", meter.name)]
                p.sample("tollgate_quota_limit", labels, limit)
                used.append((labels, usage[meter] ?? 0))
            }
        }
        p.family("tollgate_quota_used", "gauge", "Use of the current calendar window by department and meter (this replica's counters; with Redis they hold the replicas' shared totals, merged every sync interval).")
        for u in used { p.sample("tollgate_quota_used", u.labels, u.value) }

        if let writer {
            p.single("tollgate_ledger_queue_depth", "gauge", "Usage rows handed to the ledger writer and not yet committed.", writer.queueDepth)
            p.single("tollgate_ledger_last_write_latency_seconds", "gauge", "Duration of the ledger's last committed transaction.", writer.lastWriteLatencyMs / 1000)
            p.single("tollgate_ledger_rows_committed_total", "counter", "Usage rows committed since start.", writer.committedRows)
            p.single("tollgate_ledger_write_errors_total", "counter", "Failed ledger transactions (retried).", writer.writeErrors)
            p.single("tollgate_ledger_backlog_limit", "gauge", "Rows waiting at which the ledger is saturated and new requests are refused.", writer.maxBacklog)
            p.single("tollgate_ledger_saturated", "gauge", "1 while the ledger's backlog is full (new requests get 503).", writer.isSaturated ? 1 : 0)
            p.single("tollgate_ledger_rows_dropped_total", "counter", "Usage rows dropped past the backlog's hard ceiling (twice the limit).", writer.droppedRows)
        }

        p.single("tollgate_redis_configured", "gauge", "1 when the gateway was started with --redis.", m.redisConfigured ? 1 : 0)
        p.single("tollgate_redis_connections", "gauge", "Redis connections (one per event loop).", m.redisConnections)
        p.single("tollgate_redis_connections_available", "gauge", "Redis connections connected and ready.", m.redisAvailableConnections)
        p.single("tollgate_redis_outages_total", "counter", "Times a Redis connection went from ready to down.", m.redisOutages)

        if m.redisConfigured {
            let f = dataPlane.fleetCounters
            p.single("tollgate_quota_leasing", "gauge", "1 while quotas are admitted on slices leased from Redis; 0 on this replica's own counters (fallback).", dataPlane.state.quotas.leases.isLeasing ? 1 : 0)
            p.single("tollgate_fleet_subscribed", "gauge", "1 while the fleet's pub/sub subscription is up.", f.subscribed.load(ordering: .relaxed))
            p.single("tollgate_fleet_events_received_total", "counter", "Fleet events from other replicas acted on.", f.eventsReceived.load(ordering: .relaxed))
            p.single("tollgate_fleet_events_dropped_total", "counter", "Fleet messages dropped as malformed.", f.eventsDropped.load(ordering: .relaxed))
            p.single("tollgate_fleet_events_published_total", "counter", "Fleet events this replica published.", f.eventsPublished.load(ordering: .relaxed))
            p.single("tollgate_fleet_key_syncs_total", "counter", "Key registry syncs with Redis.", f.keySyncs.load(ordering: .relaxed))
            p.single("tollgate_fleet_key_sync_failures_total", "counter", "Key registry syncs that failed (Redis or the ledger not answering).", f.keySyncFailures.load(ordering: .relaxed))
            p.single("tollgate_fleet_key_records_refused_total", "counter", "Key registry entries refused (out of range, conflicting digests).", f.keyRecordsRefused.load(ordering: .relaxed))
            p.single("tollgate_fleet_rollup_publish_failures_total", "counter", "Rollup publications that failed (kept for the next one).", f.rollupPublishFailures.load(ordering: .relaxed))
            p.single("tollgate_fleet_rollup_cells_dropped_total", "counter", "Rollup cells dropped because the unpublished backlog was full.", f.rollupCellsDropped.load(ordering: .relaxed))
        }

        p.single("tollgate_config_generation", "gauge", "Generation of the routing table in force (bumped by each reload).", table.generation)
        return p.text
    }
}

extension ControlPlane {
    static func addMetrics(to router: Router<BasicRequestContext>, dataPlane: DataPlane, writer: UsageWriter?) {
        router.get("metrics") { _, _ -> Response in
            let text = try await MetricsEndpoint.render(dataPlane: dataPlane, writer: writer)
            return Response(status: .ok, headers: [.contentType: PrometheusText.contentType],
                            body: .init(byteBuffer: ByteBuffer(string: text)))
        }
    }
}
