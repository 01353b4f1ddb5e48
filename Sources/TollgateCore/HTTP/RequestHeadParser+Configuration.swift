extension RequestHeadParser.Limits {
    /// From the configuration's `limits.max_header_bytes` and `limits.max_header_count`; the
    /// request line gets RFC 9112 §3's recommended 8000 and a little more, within the head's limit.
    public init(_ limits: RequestLimits) {
        self.init(maxHeadBytes: limits.maxHeaderBytes, maxFieldCount: limits.maxHeaderCount,
                  maxRequestLineBytes: min(8 * 1024, limits.maxHeaderBytes))
    }
}
