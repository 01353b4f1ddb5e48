import Logging
import NIOCore
import NIOPosix
import NIOHTTP1
import TollgateCore

extension LocalAnswers {
    /// `GET /v1/usage`: the caller's own department's report. The report reads SQLite, which
    /// blocks, so it runs on the data plane's small thread pool; `answer` is called on `loop`
    /// (at once when there is no ledger or too many reports wait). Only `department` is ever read.
    static func usage(department: String, uri: String, requestID: String, loop: LoopContext,
                      answer: @escaping (LocalAnswer) -> Void) {
        guard let reporter = loop.usageReporter else {
            return answer(.error(.notFound(method: "GET", path: "/v1/usage")))
        }
        // Each loop lets a few reports wait on the pool, and refuses more rather than queue
        // without bound behind a slow one.
        guard loop.usageReportsRunning < LoopContext.maxUsageReports else {
            return answer(.error(.overloaded("too many usage reports at once")))
        }
        loop.usageReportsRunning += 1
        let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
        loop.threadPool.runIfActive(eventLoop: loop.eventLoop) {
            try reporter(department, query)
        }.assumeIsolated().whenComplete { result in
            loop.usageReportsRunning -= 1
            switch result {
            case .success(let report):
                answer(LocalAnswer(status: HTTPResponseStatus(statusCode: report.status), body: report.body))
            case .failure(let error):
                // The report's own refusals come back as answers; a thrown error is the ledger's.
                loop.logger.error("usage report failed", metadata: ["request_id": "\(requestID)", "error": "\(error)"])
                answer(.error(.ledgerUnavailable))
            }
        }
    }
}
