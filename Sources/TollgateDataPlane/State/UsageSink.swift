import Foundation
import NIOConcurrencyHelpers
import TollgateCore

/// Where the event loops hand their usage records: the ledger's writer thread (any
/// `UsageRecordSink`; the server passes the ledger's `UsageWriter`). Each loop
/// collects records on its own and hands them over in batches (one lock per batch, never
/// per request); keys' last-use times ride along.
public final class UsageSink: Sendable {
    public let writer: any UsageRecordSink
    /// Written into every record, so that merged reports can tell replicas apart.
    public let replica: String?
    private let lastUsed = NIOLockedValueBox<[String: Int64]>([:])
    /// Sees every batch after the writer (the fleet's rollups); set once at start.
    private let observer = Hook<[UsageRecord]>()

    public init(writer: any UsageRecordSink, replica: String? = nil) {
        self.writer = writer
        self.replica = replica
    }

    func submit(_ records: [UsageRecord], lastUsed uses: [String: Int64]) {
        writer.submit(records)
        // One lock per batch (every 100 ms per loop), as for the last-use times below.
        if !records.isEmpty { observer.call(records) }
        if !uses.isEmpty {
            lastUsed.withLockedValue { all in
                for (prefix, ms) in uses where ms > all[prefix] ?? 0 { all[prefix] = ms }
            }
        }
    }

    /// Hands every batch of records to `observe` as well (on the submitting loop: keep it short).
    public func observe(_ observe: @escaping @Sendable ([UsageRecord]) -> Void) {
        observer.install(observe)
    }

    /// True while the ledger's backlog is full (`UsageRecordSink.isSaturated`): new requests
    /// should be refused with 503 and `Retry-After` (`GatewayError.ledgerSaturated`) rather
    /// than answered without a record.
    public var isSaturated: Bool { writer.isSaturated }

    /// Keys used since the last call (prefix → last use, Unix ms), for `keys list`.
    public func takeLastUsed() -> [String: Int64] {
        lastUsed.withLockedValue { all in
            defer { all = [:] }
            return all
        }
    }
}

/// Builds the answer to `GET /v1/usage` for one department from the query string
/// (`period=2026-11`, or `from=2026-11-01&to=2026-11-30`). Blocking: runs on a thread pool.
public typealias UsageReporter = @Sendable (_ department: String, _ query: String) throws -> (status: Int, body: String)
