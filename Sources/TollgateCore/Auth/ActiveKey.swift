/// A key the gateway accepts: what it loads into its in-memory table.
public struct ActiveKey: Sendable, Equatable {
    /// Lower-case hex SHA-256 of the key.
    public var sha256: String
    public var department: String
    public var prefix: String
    public var expiresMs: Int64?

    public init(sha256: String, department: String, prefix: String, expiresMs: Int64?) {
        self.sha256 = sha256
        self.department = department
        self.prefix = prefix
        self.expiresMs = expiresMs
    }

    /// The digest as the gateway's key table holds it.
    public var digest: KeyDigest? { KeyDigest(hex: sha256) }
}
