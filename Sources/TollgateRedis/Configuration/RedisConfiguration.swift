import NIOCore

/// Where and how to reach Redis.
///
/// | field | default | meaning |
/// |---|---|---|
/// | `host` | `127.0.0.1` | IP address or host name (names are resolved off the event loop) |
/// | `port` | `6379` | TCP port |
/// | `username` | `nil` | ACL user for `AUTH username password` (Redis 6+); needs `password` |
/// | `password` | `nil` | sent with `AUTH` on every (re)connect |
/// | `database` | `0` | selected with `SELECT` on every (re)connect |
/// | `connectTimeout` | 500 ms | TCP connect, and the AUTH/SELECT/PING handshake |
/// | `commandTimeout` | 250 ms | per command; a timeout resets the connection |
/// | `maxBackoff` | 5 s | ceiling of the reconnect delay (50 ms doubling, with jitter) |
public struct RedisConfiguration: Sendable, Equatable {
    /// IP address or host name.
    public var host: String
    /// TCP port.
    public var port: Int
    /// Password sent with `AUTH`, if any.
    public var password: String?
    /// ACL user name sent with `AUTH`, if any (only together with `password`).
    public var username: String?
    /// Logical database chosen with `SELECT` (when not 0).
    public var database: Int
    /// Time allowed for the TCP connect and for the handshake that follows it.
    public var connectTimeout: TimeAmount = .milliseconds(500)
    /// Time allowed for each command's reply.
    public var commandTimeout: TimeAmount = .milliseconds(250)
    /// The longest wait between reconnect attempts.
    public var maxBackoff: TimeAmount = .seconds(5)

    /// A configuration from its parts; the timeouts keep their defaults unless given.
    public init(
        host: String = "127.0.0.1",
        port: Int = 6379,
        password: String? = nil,
        username: String? = nil,
        database: Int = 0,
        connectTimeout: TimeAmount = .milliseconds(500),
        commandTimeout: TimeAmount = .milliseconds(250),
        maxBackoff: TimeAmount = .seconds(5)
    ) {
        self.host = host
        self.port = port
        self.password = password
        self.username = username
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.maxBackoff = maxBackoff
    }

    /// Parses `redis://[[username]:password@]host[:port][/db]`.
    ///
    /// User name and password may be percent-encoded; an IPv6 host is written in brackets
    /// (`redis://[::1]:6380`). Timeouts keep their defaults.
    ///
    /// - Throws: `RedisError.badURL` with the reason when the URL is malformed. The message
    ///   quotes no part of the URL but its scheme: a malformed URL may hold the password
    ///   anywhere (a forgotten `@` makes it the port, a `/` in it the database), and the message
    ///   goes to logs and terminals.
    public init(url: String) throws {
        self.init()
        let schemeEnd = url.firstRange(of: "://")
        guard let schemeEnd else {
            throw RedisError.badURL("the Redis URL is not a URL: expected redis://[[username]:password@]host[:port][/db]")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "redis" else {
            let shown = scheme.count <= 10 && scheme.allSatisfy({ $0.isLetter }) ? "'\(scheme)'" : "scheme"
            throw RedisError.badURL("unsupported \(shown) in Redis URL: only redis:// is supported (no TLS)")
        }
        var rest = url[schemeEnd.upperBound...]
        if let bad = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) {
            throw RedisError.badURL("unexpected '\(rest[bad])' in Redis URL: query and fragment are not supported (percent-encode it in a password)")
        }

        // Authority and path.
        let path: Substring
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        } else {
            path = ""
        }

        // User information (the last "@": passwords may contain an unencoded "@").
        var hostPort = rest
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            hostPort = rest[rest.index(after: at)...]
            guard let colon = userInfo.firstIndex(of: ":") else {
                throw RedisError.badURL("Redis URL user information needs a password: write redis://:password@host or redis://user:password@host")
            }
            let user = try Self.percentDecoded(userInfo[..<colon], what: "user name")
            let password = try Self.percentDecoded(userInfo[userInfo.index(after: colon)...], what: "password")
            guard !password.isEmpty else {
                throw RedisError.badURL("empty password in Redis URL")
            }
            self.username = user.isEmpty ? nil : user
            self.password = password
        }

        // Host and port.
        var portText: Substring?
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else {
                throw RedisError.badURL("unterminated IPv6 address in Redis URL: write redis://[::1]:6379")
            }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else {
                    throw RedisError.badURL("unexpected text after the IPv6 address in Redis URL: write redis://[::1]:6379")
                }
                portText = after.dropFirst()
            }
        } else if let colon = hostPort.firstIndex(of: ":") {
            host = String(hostPort[..<colon])
            portText = hostPort[hostPort.index(after: colon)...]
        } else {
            host = String(hostPort)
        }
        guard !host.isEmpty else {
            throw RedisError.badURL("missing host in Redis URL")
        }
        if let portText {
            guard let port = Int(portText), (1...65535).contains(port), portText.allSatisfy(\.isASCIIDigit) else {
                throw RedisError.badURL("invalid port in Redis URL: expected 1-65535 (a password goes before an '@': redis://:password@host:port)")
            }
            self.port = port
        }

        // Database.
        if !path.isEmpty {
            guard path.allSatisfy(\.isASCIIDigit), let database = Int(path) else {
                throw RedisError.badURL("invalid database in Redis URL: expected a number such as /0 (percent-encode a '/' in a password as %2F)")
            }
            self.database = database
        }
    }

    /// `url` fit for a log: the user information (user name and password) replaced by `***`.
    /// A URL whose user information cannot be told apart (no `://`, or a port that is no
    /// number, as when the `@` was forgotten) is shown as little as possible.
    public static func redacted(_ url: String) -> String {
        guard let schemeEnd = url.firstRange(of: "://") else { return "***" }
        let scheme = url[..<schemeEnd.upperBound]
        let rest = url[schemeEnd.upperBound...]
        if let at = rest.lastIndex(of: "@") {
            return String(scheme) + "***@" + String(rest[rest.index(after: at)...])
        }
        let authority = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        if !authority.hasPrefix("["), let colon = authority.firstIndex(of: ":"),
           !authority[authority.index(after: colon)...].allSatisfy(\.isASCIIDigit) {
            return String(scheme) + "***"
        }
        return String(url)
    }

    private static func percentDecoded(_ text: Substring, what: String) throws -> String {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        var utf8 = Array(text.utf8)[...]
        while let byte = utf8.popFirst() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            let hex = utf8.prefix(2)
            guard hex.count == 2, hex.allSatisfy({ Character(Unicode.Scalar($0)).isHexDigit }),
                  let value = UInt8(String(decoding: hex, as: UTF8.self), radix: 16)
            else {
                throw RedisError.badURL("invalid percent-encoding in the Redis URL's \(what)")
            }
            bytes.append(value)
            utf8 = utf8.dropFirst(2)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension RedisConfiguration: CustomStringConvertible, CustomDebugStringConvertible {
    /// The target without the password (`redis://***@host:port/db`): safe to interpolate into
    /// a log line or an error, which the synthesized description (every field) was not.
    public var description: String {
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        return "redis://\(password == nil ? "" : "***@")\(host):\(port)/\(database)"
    }

    public var debugDescription: String { description }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
