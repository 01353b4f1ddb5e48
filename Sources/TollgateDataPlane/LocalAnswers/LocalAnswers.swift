import NIOHTTP1
import TollgateCore

/// An answer the gateway makes itself: an error, `/healthz`, `/v1/models`, a usage report.
struct LocalAnswer {
    var status: HTTPResponseStatus
    var body: String
    var headers: [(String, String)] = []
    var error: GatewayError?

    static func error(_ e: GatewayError) -> LocalAnswer {
        var headers: [(String, String)] = []
        if let r = e.retryAfter { headers.append(("retry-after", String(r))) }
        return LocalAnswer(status: HTTPResponseStatus(statusCode: e.status), body: e.body, headers: headers, error: e)
    }
}

/// The data plane's own endpoints, answered without an instance: `/v1/models` and `/healthz`
/// from the routing snapshot, `/v1/usage` from the ledger off the loop (`UsageReport.swift`).
enum LocalAnswers {
    /// `GET /v1/models`: every model name of every pool.
    static func models(_ table: RoutingTable) -> LocalAnswer {
        var body = "{\"object\":\"list\",\"data\":["
        var first = true
        for pool in table.pools {
            for model in pool.models {
                if !first { body += "," }
                first = false
                body += "{\"id\":"
                appendJSONString(model, to: &body)
                body += ",\"object\":\"model\",\"created\":0,\"owned_by\":"
                appendJSONString(pool.name, to: &body)
                body += "}"
            }
        }
        body += "]}\n"
        return LocalAnswer(status: .ok, body: body)
    }

    /// `GET /healthz`: 200 while an instance is available, else 503, with each instance's state
    /// at monotonic time `now`.
    static func health(_ state: GatewayState, now: UInt64) -> LocalAnswer {
        // The same instance view as the control plane's `/healthz` and the admin overview
        // (`InstanceStatus`); this answer shows only what the published snapshot holds.
        let statuses = InstanceStatus.all(in: state, health: [:], now: now)
        var available = 0
        var instances = ""
        for status in statuses {
            if status.available { available += 1 }
            if !instances.isEmpty { instances += "," }
            instances += "{\"name\":"
            appendJSONString(status.name, to: &instances)
            instances += ",\"pool\":"
            appendJSONString(status.pool, to: &instances)
            instances += ",\"available\":\(status.available),\"probe_up\":\(status.probeUp),\"ejected\":\(status.ejected)}"
        }
        var body = "{\"status\":"
        body += available > 0 ? "\"ok\"" : "\"degraded\""
        body += ",\"instances_available\":\(available),\"instances_total\":\(statuses.count),\"instances\":[\(instances)]}\n"
        return LocalAnswer(status: available > 0 ? .ok : .serviceUnavailable, body: body)
    }
}
