/// Where the data plane hands its usage records to be committed: the ledger's `UsageWriter`
/// conforms (in TollgateLedger), so that the data plane needs no SQLite. The data plane's
/// `UsageSink` batches each event loop's records and calls `submit` once per batch.
public protocol UsageRecordSink: AnyObject, Sendable {
    /// Queues `batch` for commit; never blocks on the database.
    func submit(_ batch: [UsageRecord])
    /// True while the backlog is full: new requests should be refused (503) rather than
    /// answered without a record.
    var isSaturated: Bool { get }
}
