/// A RESP2 reply, copied out of hiredis into plain Swift values.
public enum RESPValue: Sendable, Equatable {
    /// `+OK`: a status reply.
    case simpleString(String)
    /// `-ERR …`: an error reply. A top-level error reply fails the command with `RedisError.server`;
    /// this case appears only inside arrays (for example in an `EXEC` or a script's result).
    case error(String)
    /// `:42`
    case integer(Int64)
    /// `$3\r\nfoo`: binary-safe bytes.
    case bulkString([UInt8])
    /// `$-1` or `*-1`.
    case null
    /// `*2 …`
    case array([RESPValue])

    /// The value as text: a status, or a bulk string decoded as UTF-8 (lossy); an integer in decimal.
    public var string: String? {
        switch self {
        case .simpleString(let text): return text
        case .bulkString(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .integer(let value): return String(value)
        case .error, .null, .array: return nil
        }
    }

    /// The value as an integer: an integer reply, or a bulk string or status holding a decimal number
    /// (as `GET` of a counter returns).
    public var int: Int64? {
        switch self {
        case .integer(let value): return value
        case .bulkString(let bytes): return Int64(String(decoding: bytes, as: UTF8.self))
        case .simpleString(let text): return Int64(text)
        case .error, .null, .array: return nil
        }
    }

    /// The raw bytes of a bulk string or status.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let bytes): return bytes
        case .simpleString(let text): return Array(text.utf8)
        case .integer, .error, .null, .array: return nil
        }
    }

    /// The elements of an array reply.
    public var array: [RESPValue]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// `true` for `$-1` / `*-1`.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}
