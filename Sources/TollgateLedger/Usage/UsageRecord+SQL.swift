import GRDB
import TollgateCore

extension UsageRecord {
    static let insertSQL = """
        INSERT INTO usage (time_ms, request_id, department, key_prefix, model, endpoint, instance,
            status, prompt_tokens, completion_tokens, latency_ms, ttft_ms, cache, stream, cache_key,
            prompt_preview, reserved_tokens, replica, queue_ms, error_code)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """

    static let selectColumns = """
        time_ms, request_id, department, key_prefix, model, endpoint, instance, status,
        prompt_tokens, completion_tokens, latency_ms, ttft_ms, cache, stream, cache_key,
        prompt_preview, reserved_tokens, replica, queue_ms, error_code
        """

    /// A record from a row selected with `selectColumns`, in that order.
    init(row: Row) throws {
        let cacheText: String = row[12]
        guard let cache = CacheOutcome(rawValue: cacheText) else {
            throw LedgerError.corruptRow("usage.cache = '\(cacheText)'")
        }
        self.init(
            timeMs: row[0], requestID: row[1], department: row[2], keyPrefix: row[3], model: row[4],
            endpoint: row[5], instance: row[6], status: row[7], promptTokens: row[8],
            completionTokens: row[9], latencyMs: row[10], ttftMs: row[11], cache: cache,
            stream: row[13], cacheKey: row[14], promptPreview: row[15], reservedTokens: row[16],
            replica: row[17], queueMs: row[18], errorCode: row[19])
    }
}
