import Crypto

/// One numbered SQL file from `migrations/`, e.g. `0001_usage.sql`.
///
/// A migration never changes once it has shipped and never refers to application types:
/// it is plain SQL, applied once, in its own transaction, in number order. The checksum
/// (SHA-256 of the file's bytes, lower-case hex, as sqlx records it) lets the database
/// refuse a file that was edited after it was applied. A file must not contain
/// `BEGIN`/`COMMIT`: the migrator wraps it in a transaction.
public struct Migration: Sendable, Equatable {
    /// The file name, e.g. `0001_usage.sql`; recorded in `tollgate_migrations.name`.
    public let name: String
    public let sql: String
    /// Lower-case hex SHA-256 of the file's bytes (its UTF-8 text).
    public let checksum: String

    /// A migration from its file name and text; the name must be `NNNN_description.sql`.
    public init(name: String, sql: String) throws {
        guard Migration.isWellFormed(name) else { throw LedgerError.migrationNameMalformed(name) }
        self.name = name
        self.sql = sql
        self.checksum = Migration.sha256Hex(Array(sql.utf8))
    }

    /// The four-digit number that orders migrations.
    public var number: Int { Int(name.prefix(4))! }

    /// `NNNN_word(_word)*.sql`, words of lower-case letters and digits.
    static func isWellFormed(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard bytes.count > 9, name.hasSuffix(".sql") else { return false }
        func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
        func isLower(_ b: UInt8) -> Bool { b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z") }
        guard bytes[0..<4].allSatisfy(isDigit), bytes[4] == UInt8(ascii: "_") else { return false }
        let words = bytes[5..<(bytes.count - 4)].split(separator: UInt8(ascii: "_"), omittingEmptySubsequences: false)
        return words.allSatisfy { word in !word.isEmpty && word.allSatisfy { isDigit($0) || isLower($0) } }
    }

    static func sha256Hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in SHA256.hash(data: bytes) {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Checks a list as the migrator needs it: every name well formed, no shared numbers.
    /// Returns the list sorted by number.
    static func validated(_ migrations: [Migration]) throws -> [Migration] {
        let sorted = migrations.sorted { $0.number < $1.number || ($0.number == $1.number && $0.name < $1.name) }
        for (previous, next) in zip(sorted, sorted.dropFirst()) where previous.number == next.number {
            throw LedgerError.migrationNumberDuplicated(previous.name, next.name)
        }
        return sorted
    }
}
