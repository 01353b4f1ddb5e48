import Foundation

/// A report's time range, half-open: `from` included, `to` excluded.
public struct ReportPeriod: Sendable, Equatable {
    public var from: Date
    public var to: Date

    public init(from: Date, to: Date) {
        self.from = from
        self.to = to
    }

    /// The longest period a report over HTTP may cover (`/v1/usage`, the admin quota report):
    /// a report reads every latency of its range, so the range is the bound on its work.
    public static let maxDays = 366

    /// Years a period may fall in: Unix milliseconds stay positive and far from overflow.
    static let years = 1970...9999

    /// Throws `LedgerError.periodTooLong` when the period covers more than `maxDays` days.
    public func checkLength(maxDays: Int = ReportPeriod.maxDays) throws {
        let days = (toMs - fromMs) / 86_400_000
        // Calendar days: a day with a clock change is 23 or 25 hours.
        if days > Int64(maxDays) || (days == Int64(maxDays) && (toMs - fromMs) % 86_400_000 > 3_600_000) {
            throw LedgerError.periodTooLong(maxDays: maxDays)
        }
    }

    /// `from` in Unix milliseconds (included).
    public var fromMs: Int64 { from.unixMs }
    /// `to` in Unix milliseconds (excluded).
    public var toMs: Int64 { to.unixMs }

    /// `--period 2026-11`: the calendar month, midnight to midnight in `timeZone`.
    public static func month(_ text: String, timeZone: TimeZone) throws -> ReportPeriod {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 4, parts[1].count == 2,
              let year = Int(parts[0]), years.contains(year), let month = Int(parts[1]), (1...12).contains(month),
              parts.allSatisfy({ $0.allSatisfy(\.isASCII) })
        else { throw LedgerError.invalidPeriod("--period \(text)") }
        let calendar = gregorian(timeZone)
        guard let start = calendar.date(from: DateComponents(year: year, month: month, day: 1)),
              let end = calendar.date(byAdding: .month, value: 1, to: start)
        else { throw LedgerError.invalidPeriod("--period \(text)") }
        return ReportPeriod(from: start, to: end)
    }

    /// `--from 2026-11-01 --to 2026-11-30`: both days included, midnight to midnight in
    /// `timeZone` (so `to` is the midnight after the `--to` day).
    public static func days(from fromText: String, to toText: String, timeZone: TimeZone) throws -> ReportPeriod {
        let calendar = gregorian(timeZone)
        guard let start = day(fromText, calendar), let lastDay = day(toText, calendar),
              let end = calendar.date(byAdding: .day, value: 1, to: lastDay), start < end
        else { throw LedgerError.invalidPeriod("--from \(fromText) --to \(toText)") }
        return ReportPeriod(from: start, to: end)
    }

    /// Midnight starting `YYYY-MM-DD` in the calendar's time zone; nil for a malformed or
    /// impossible date (2026-02-30).
    private static func day(_ text: String, _ calendar: Calendar) -> Date? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
              parts.allSatisfy({ $0.allSatisfy(\.isASCII) }),
              let year = Int(parts[0]), years.contains(year), let month = Int(parts[1]), let day = Int(parts[2]),
              let date = calendar.date(from: DateComponents(year: year, month: month, day: day))
        else { return nil }
        let check = calendar.dateComponents([.year, .month, .day], from: date)
        guard check.year == year, check.month == month, check.day == day else { return nil }
        return date
    }

    private static func gregorian(_ timeZone: TimeZone) -> Calendar {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        return calendar
    }
}
