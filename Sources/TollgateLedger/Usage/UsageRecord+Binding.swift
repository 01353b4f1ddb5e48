import CSQLite
import GRDB
import TollgateCore

/// How the ledger bounds what it stores.
extension UsageRecord {
    /// The largest token count the ledger stores (2^40, about 10^12). Counts come from the
    /// instances (`usage`) and from quota reservations, both outside the gateway's control;
    /// clamped on the way in, a row can neither be refused by SQLite nor make `sum()` over a
    /// department overflow (2^23 such rows still sum below 2^63), which used to fail quota
    /// seeding and with it `serve` at start.
    public static let maxTokens: Int64 = 1 << 40
    /// The largest latency or time to first token stored, in milliseconds (about 115 days).
    public static let maxMilliseconds: Double = 1e10

    /// A token count as the ledger stores it: nil stays nil, negatives become 0, and counts
    /// above `maxTokens` become `maxTokens`.
    @inline(__always)
    static func storedTokens(_ value: Int?) -> Int64? {
        guard let value else { return nil }
        return min(max(Int64(value), 0), maxTokens)
    }

    /// A duration in milliseconds as the ledger stores it: NaN and negatives become 0,
    /// anything above `maxMilliseconds` (including infinity) becomes `maxMilliseconds`.
    @inline(__always)
    static func storedMilliseconds(_ value: Double) -> Double {
        guard value > 0 else { return 0 }  // NaN compares false
        return min(value, maxMilliseconds)
    }
}

/// Binds a usage row straight to the prepared insert statement with SQLite's C API. Building
/// GRDB `StatementArguments` for each row boxed its 18 values (about half of the writer's CPU
/// time per row); the statement itself is still GRDB's cached one.
extension UsageRecord {
    /// Inserts `records` with `statement`, prepared from `insertSQL`, in the caller's transaction.
    static func insert(_ records: some Collection<UsageRecord>, with statement: Statement, in db: Database) throws {
        let stmt = statement.sqliteStatement
        defer { sqlite3_reset(stmt) }
        for record in records {
            sqlite3_reset(stmt)
            record.bind(to: stmt)
            let code = sqlite3_step(stmt)
            guard code == SQLITE_DONE else {
                throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)),
                                    sql: insertSQL)
            }
        }
    }

    /// The values in `insertSQL`'s column order. Numbers are clamped (`storedTokens`,
    /// `storedMilliseconds`): a value from an instance or a reservation can neither get the
    /// row refused (NaN in a `NOT NULL` column) nor overflow later sums.
    private func bind(to stmt: OpaquePointer) {
        sqlite3_bind_int64(stmt, 1, timeMs)
        bindText(stmt, 2, requestID)
        bindText(stmt, 3, department)
        bindText(stmt, 4, keyPrefix)
        bindText(stmt, 5, model)
        bindText(stmt, 6, endpoint)
        bindText(stmt, 7, instance)
        sqlite3_bind_int64(stmt, 8, Int64(min(max(status, 0), 999)))
        bindInt(stmt, 9, Self.storedTokens(promptTokens))
        bindInt(stmt, 10, Self.storedTokens(completionTokens))
        sqlite3_bind_double(stmt, 11, Self.storedMilliseconds(latencyMs))
        if let ttftMs, !ttftMs.isNaN { sqlite3_bind_double(stmt, 12, Self.storedMilliseconds(ttftMs)) } else { sqlite3_bind_null(stmt, 12) }
        bindText(stmt, 13, cache.rawValue)
        sqlite3_bind_int64(stmt, 14, stream ? 1 : 0)
        bindText(stmt, 15, cacheKey)
        bindText(stmt, 16, promptPreview)
        bindInt(stmt, 17, Self.storedTokens(reservedTokens))
        bindText(stmt, 18, replica)
        if let queueMs, !queueMs.isNaN { sqlite3_bind_double(stmt, 19, Self.storedMilliseconds(queueMs)) } else { sqlite3_bind_null(stmt, 19) }
        bindText(stmt, 20, errorCode)
    }
}

/// SQLite copies the bytes before the call returns (`SQLITE_TRANSIENT`, a C macro Swift does not import).
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

private func bindText(_ stmt: OpaquePointer, _ index: Int32, _ value: String?) {
    guard var value else {
        sqlite3_bind_null(stmt, index)
        return
    }
    value.withUTF8 { bytes in
        if let base = bytes.baseAddress, bytes.count > 0 {
            base.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
                _ = sqlite3_bind_text(stmt, index, $0, Int32(bytes.count), transient)
            }
        } else {
            _ = sqlite3_bind_text(stmt, index, "", 0, transient)  // empty text, not NULL
        }
    }
}

private func bindInt(_ stmt: OpaquePointer, _ index: Int32, _ value: Int64?) {
    if let value { sqlite3_bind_int64(stmt, index, value) } else { sqlite3_bind_null(stmt, index) }
}
