import NIOCore

/// Typed conveniences over `send`. Keys are UTF-8 strings, values binary-safe bytes.
extension RedisConnection {
    /// `GET key`: the value, or `nil` when the key does not exist.
    public func get(_ key: String) -> EventLoopFuture<[UInt8]?> {
        send([Array("GET".utf8), Array(key.utf8)]).flatMapThrowing { reply in
            if reply.isNull { return nil }
            guard let bytes = reply.bytes else { throw Self.unexpected(reply, for: "GET") }
            return bytes
        }
    }

    /// `SET key value [PX milliseconds]`.
    public func set(_ key: String, to value: [UInt8], expiresIn ttl: TimeAmount? = nil) -> EventLoopFuture<Void> {
        var arguments: [[UInt8]] = [Array("SET".utf8), Array(key.utf8), value]
        if let ttl {
            arguments.append(Array("PX".utf8))
            arguments.append(Array(String(max(1, ttl.nanoseconds / 1_000_000)).utf8))
        }
        return send(arguments).map { _ in }
    }

    /// `INCRBY key amount`: the new value.
    public func incrementBy(_ key: String, _ amount: Int64 = 1) -> EventLoopFuture<Int64> {
        integer(["INCRBY", key, String(amount)])
    }

    /// `PEXPIRE key milliseconds`: whether the key exists.
    public func expire(_ key: String, in ttl: TimeAmount) -> EventLoopFuture<Bool> {
        integer(["PEXPIRE", key, String(max(1, ttl.nanoseconds / 1_000_000))]).map { $0 == 1 }
    }

    /// `DEL key…`: how many keys were removed.
    public func delete(_ keys: String...) -> EventLoopFuture<Int64> {
        integer(["DEL"] + keys)
    }

    /// `EVAL script numkeys key… arg…`: the script's result.
    public func eval(_ script: String, keys: [String] = [], arguments: [String] = []) -> EventLoopFuture<RESPValue> {
        send(command: ["EVAL", script, String(keys.count)] + keys + arguments)
    }

    /// `PING`.
    public func ping() -> EventLoopFuture<Void> {
        send("PING").map { _ in }
    }

    private func integer(_ arguments: [String]) -> EventLoopFuture<Int64> {
        send(command: arguments).flatMapThrowing { reply in
            guard case .integer(let value) = reply else { throw Self.unexpected(reply, for: arguments[0]) }
            return value
        }
    }

    private static func unexpected(_ reply: RESPValue, for command: String) -> RedisError {
        .protocolError("unexpected reply to \(command): \(reply)")
    }
}
