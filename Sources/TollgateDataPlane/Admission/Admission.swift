import NIOCore
import TollgateCore

/// Step 3 and 4 of a request, once its body is complete: read the body once (model, stream,
/// sampling, the numbers the quota needs — `RequestScanner`), find the model's pool, and reserve
/// the request against the department's quotas (`QuotaBook`, on this process's counters, kept
/// in step with the other replicas by `QuotaSync`). The reservation is settled where the
/// request ends (`LoopContext.end`).
enum Admission {
    enum Decision {
        case admitted(AdmittedRequest)
        /// Refused before any instance: the answer, and what its ledger row says.
        case refused(Refusal)
    }

    struct Refusal {
        var answer: LocalAnswer
        var status: Int
        var model: String?
        var stream: Bool
        /// Refused by a quota (counted apart from malformed requests).
        var byQuota: Bool
    }

    static func admit(_ request: GatewayRequest, loop: LoopContext) -> Decision {
        let table = request.state.table
        let summary: RequestSummary
        do {
            summary = try request.body.withUnsafeReadableBytes { buffer throws(RequestBodyError) in
                try RequestScanner.scan(buffer)
            }
        } catch {
            return .refused(Refusal(answer: .error(.invalidRequest(error.message, param: error.param)), status: 400, model: nil,
                                    stream: false, byQuota: false))
        }
        guard let model = summary.model, !model.isEmpty else {
            return .refused(Refusal(answer: .error(.invalidRequest("You must provide a model parameter.", param: "model")), status: 400,
                                    model: nil, stream: summary.stream, byQuota: false))
        }
        guard let pool = table.pool(forModel: model) else {
            return .refused(Refusal(answer: .error(.modelNotFound(model)), status: 404, model: model, stream: summary.stream, byQuota: false))
        }
        let quotas = request.state.quotas
        let nowMs = wallClockMs()
        let windows = loop.quotaWindows(table.configuration.quotas, nowMs: nowMs)
        let cost = reservationEstimate(promptBytes: summary.promptRange?.count ?? request.body.readableBytes,
                                       maxTokens: summary.maxTokens, choices: summary.choices,
                                       defaultMaxTokens: table.configuration.quotas.defaultMaxTokens)
        switch quotas.admit(department: request.caller.department, tokens: cost, at: windows, nowMs: nowMs) {
        case .admitted(let reservation):
            return .admitted(AdmittedRequest(request: request, summary: summary, model: model, pool: pool, reservation: reservation))
        case .rejected(let meter, let limit, let used, let requested, let wait):
            var answer = LocalAnswer.error(.quotaExceeded(
                department: request.departmentName, meter: meter, limit: limit, used: used, requested: requested, retryAfter: wait))
            answer.headers += quotas.headers(department: request.caller.department, at: windows, nowMs: nowMs)
            return .refused(Refusal(answer: answer, status: 429, model: model, stream: summary.stream, byQuota: true))
        }
    }
}
