import TollgateCore

/// Where the shared quota counters live in Redis: one key per department, meter and window.
enum SharedQuota {
    static func key(department: String, meter: QuotaMeter, window: Int64) -> String {
        "tollgate:quota:\(department):\(meter.headerName):\(window)"
    }

    /// The limited meters of a department, in order.
    static func meters(_ limits: QuotaLimits) -> [(QuotaMeter, Int)] {
        QuotaMeter.allCases.compactMap { m in limits.limit(m).map { (m, $0) } }
    }
}
