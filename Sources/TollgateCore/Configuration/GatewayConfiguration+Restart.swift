extension GatewayConfiguration {
    /// The keys of the settings that differ between `self` (running) and `loaded` and that a
    /// reload cannot apply, because they are read once at start: the sockets bound (`listen`,
    /// `admin`), the data plane's threads (`event_loops`), the Redis client
    /// (`redis.connect_timeout`, `redis.command_timeout`) and the shared-quota sync timer
    /// (`quotas.sync_interval`) and the ledger's limits (`ledger.*`). A reload keeps the running values of these and says so,
    /// rather than ignoring the change silently. In the order of the README's table.
    public func restartRequired(toApply loaded: GatewayConfiguration) -> [String] {
        var keys: [String] = []
        if listen != loaded.listen { keys.append("listen") }
        if admin != loaded.admin { keys.append("admin") }
        if eventLoops != loaded.eventLoops { keys.append("event_loops") }
        if redis.connect != loaded.redis.connect { keys.append("redis.connect_timeout") }
        if redis.command != loaded.redis.command { keys.append("redis.command_timeout") }
        if quotas.syncInterval != loaded.quotas.syncInterval { keys.append("quotas.sync_interval") }
        if ledger.maxBacklog != loaded.ledger.maxBacklog { keys.append("ledger.max_backlog") }
        if ledger.closeTimeout != loaded.ledger.closeTimeout { keys.append("ledger.close_timeout") }
        if ledger.maxConcurrentReports != loaded.ledger.maxConcurrentReports { keys.append("ledger.max_concurrent_reports") }
        return keys
    }
}
