import NIOCore
import TollgateCore
import TollgateRedis

/// Quota counters shared by every gateway replica through Redis: one key per department,
/// meter and window, reserved by one Lua script (check every meter, then add to all of them,
/// atomically), settled with INCRBY. The limit is the limit, not limit × replicas.
///
/// When Redis cannot answer, the replica falls back to its own counters (`QuotaBook`), logs
/// it once and counts it; a request never waits for a Redis that is down.
enum SharedQuota {
    /// KEYS: one counter per limited meter. ARGV: limits, then amounts, then TTLs (seconds).
    /// Returns {1, used-after…} when admitted, {0, meter-index, used} when refused.
    static let reserveScript = """
        local n = #KEYS
        local used = {}
        for i = 1, n do
          used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
          if used[i] >= tonumber(ARGV[i]) then return {0, i, used[i]} end
        end
        local out = {1}
        for i = 1, n do
          out[i + 1] = redis.call('INCRBY', KEYS[i], ARGV[n + i])
          redis.call('EXPIRE', KEYS[i], ARGV[2 * n + i])
        end
        return out
        """

    static func key(department: String, meter: QuotaMeter, window: Int64) -> String {
        "tollgate:quota:\(department):\(meter.headerName):\(window)"
    }

    /// The limited meters of a department, in order.
    static func meters(_ limits: QuotaLimits) -> [(QuotaMeter, Int)] {
        QuotaMeter.allCases.compactMap { m in limits.limit(m).map { (m, $0) } }
    }

    enum Outcome {
        case admitted(usedAfter: [QuotaMeter: Int])
        case rejected(meter: QuotaMeter, limit: Int, used: Int, requested: Int)
    }

    static func reserve(_ redis: RedisConnection, department: String, limits: QuotaLimits, tokens: Int,
                        at now: QuotaCalendar.Current, nowMs: Int64) -> EventLoopFuture<Outcome> {
        let meters = meters(limits)
        var keys: [String] = []
        var args: [String] = meters.map { String($0.1) }
        for (m, _) in meters { keys.append(key(department: department, meter: m, window: now.index(m.window))) }
        args += meters.map { m, _ in String(m == .requestsPerMinute ? 1 : tokens) }
        // Keep a window's counter a little past its end, so late settlements still find it.
        args += meters.map { m, _ in String(max(1, (now.end(m.window) - nowMs) / 1000 + 120)) }
        return redis.eval(reserveScript, keys: keys, arguments: args).flatMapThrowing { value in
            guard let items = value.array, let flag = items.first?.int else { throw RedisError.protocolError("quota script answered \(value)") }
            if flag == 1 {
                var used: [QuotaMeter: Int] = [:]
                for (i, (m, _)) in meters.enumerated() where i + 1 < items.count { used[m] = Int(items[i + 1].int ?? 0) }
                return .admitted(usedAfter: used)
            }
            let index = Int(items.count > 1 ? items[1].int ?? 1 : 1) - 1
            let (meter, limit) = meters[max(0, min(index, meters.count - 1))]
            let used = Int(items.count > 2 ? items[2].int ?? 0 : 0)
            return .rejected(meter: meter, limit: limit, used: used, requested: meter == .requestsPerMinute ? 1 : tokens)
        }
    }

    /// Replaces the reservation by the real use (fire and forget; a lost settlement errs on
    /// the side of the reservation, never of the limit).
    static func settle(_ redis: RedisConnection, department: String, limits: QuotaLimits, reservation: QuotaBook.Reservation, actualTokens: Int) {
        let delta = actualTokens - reservation.tokens
        guard delta != 0, redis.isAvailable else { return }
        let windows: [(QuotaMeter, Int64)] = [(.tokensPerMinute, reservation.minute), (.tokensPerDay, reservation.day), (.tokensPerMonth, reservation.month)]
        for (meter, window) in windows where limits.limit(meter) != nil {
            _ = redis.incrementBy(key(department: department, meter: meter, window: window), Int64(delta))
        }
    }
}
