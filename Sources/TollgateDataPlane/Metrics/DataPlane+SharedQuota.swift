import TollgateCore

extension DataPlane {
    /// Use of the shared quota counters, department → meter → use in the current window.
    ///
    /// `QuotaSync` keeps this replica's counters equal to the shared totals in Redis plus what
    /// this replica admitted since the last round, so the local counters are the best view:
    /// this returns nil and callers read them (`QuotaBook.usage`).
    public func sharedQuotaUsage(at now: QuotaCalendar.Current) async -> [String: [QuotaMeter: Int]]? {
        nil
    }
}
