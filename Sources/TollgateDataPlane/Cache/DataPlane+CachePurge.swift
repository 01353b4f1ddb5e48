import Foundation
import NIOCore
import NIOPosix
import TollgateRedis

extension DataPlane {
    /// Deletes the cached answers of one department (its namespace), or all of them, from Redis
    /// and from every loop's in-process tier; returns how many Redis entries were removed. Runs
    /// SCAN + UNLINK on a data-plane loop's own connection.
    public func purgeCache(department: String?) async throws -> Int {
        guard let redis else { throw RedisError.unavailable }
        let loop = group.next()
        let pattern = department.map { "tollgate:cache:department:\($0):*" } ?? "tollgate:cache:*"
        var cursor = "0"
        var removed = 0
        repeat {
            let current = cursor
            let (next, keys) = try await loop.submit { () -> EventLoopFuture<RESPValue> in
                redis.connection(for: loop).send(command: ["SCAN", current, "MATCH", pattern, "COUNT", "500"])
            }.flatMap { $0 }.flatMapThrowing { value -> (String, [String]) in
                guard let parts = value.array, parts.count == 2, let next = parts[0].string else {
                    throw RedisError.protocolError("SCAN answered \(value)")
                }
                return (next, (parts[1].array ?? []).compactMap(\.string))
            }.get()
            if !keys.isEmpty {
                let n = try await loop.submit { () -> EventLoopFuture<RESPValue> in
                    redis.connection(for: loop).send(command: ["UNLINK"] + keys)
                }.flatMap { $0 }.get()
                removed += Int(n.int ?? 0)
            }
            cursor = next
        } while cursor != "0"
        // Then every loop's in-process tier (after Redis, so that no loop refills it from there).
        await purgeLocalCaches(prefix: department.map { "tollgate:cache:department:\($0):" })
        return removed
    }
}
