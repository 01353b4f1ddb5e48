/// Why a Redis command or configuration failed.
///
/// Compare with the static members (`error == .unavailable`), or by kind when the message
/// varies (`error.kind == .server`).
public struct RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    fileprivate enum Code: Sendable, Equatable {
        case unavailable, timeout, protocolError, server, badURL, closed
    }

    /// The kind of failure, without its message.
    public struct Kind: Sendable, Equatable, CustomStringConvertible {
        fileprivate let code: Code

        /// Not connected (or the connection was lost while the command waited): the caller should bypass Redis.
        public static let unavailable = Kind(code: .unavailable)
        /// No reply within `RedisConfiguration.commandTimeout`.
        public static let timeout = Kind(code: .timeout)
        /// The bytes from the server were not valid RESP, or a command could not be encoded.
        public static let protocolError = Kind(code: .protocolError)
        /// The server answered with an error reply (`-ERR …`, `-WRONGTYPE …`).
        public static let server = Kind(code: .server)
        /// A malformed `redis://` URL.
        public static let badURL = Kind(code: .badURL)
        /// The connection was closed by its owner.
        public static let closed = Kind(code: .closed)

        public var description: String {
            switch code {
            case .unavailable: return "unavailable"
            case .timeout: return "timeout"
            case .protocolError: return "protocolError"
            case .server: return "server"
            case .badURL: return "badURL"
            case .closed: return "closed"
            }
        }
    }

    private let code: Code
    /// A human-readable explanation (for `.server`, the server's error text).
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The kind of failure.
    public var kind: Kind { Kind(code: code) }

    /// Not connected, or the connection was lost while the command waited.
    public static let unavailable = RedisError(.unavailable, "Redis is unavailable")
    /// No reply within the command timeout.
    public static let timeout = RedisError(.timeout, "Redis did not answer within the command timeout")
    /// The connection was closed by its owner.
    public static let closed = RedisError(.closed, "the Redis connection is closed")
    /// Invalid RESP from the server, or a command that cannot be encoded.
    public static func protocolError(_ message: String) -> RedisError { RedisError(.protocolError, message) }
    /// An error reply from the server, such as `ERR unknown command 'FOO'`.
    public static func server(_ message: String) -> RedisError { RedisError(.server, message) }
    /// A malformed `redis://` URL, with the reason.
    public static func badURL(_ message: String) -> RedisError { RedisError(.badURL, message) }

    public var description: String { "RedisError.\(kind): \(message)" }
}
