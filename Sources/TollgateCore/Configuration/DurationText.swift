import Foundation

/// The one grammar of durations people write: spaces around it ignored, a number, then a unit
/// suffix (`250ms`, `90d`). Two dialects share it, each with its own units and numbers:
/// - configuration (`parseDuration`): `ms`, `s`, `m`, `h`, or none for seconds; any finite
///   number ≥ 0 (`1.5s`);
/// - key lifetimes (`KeyStore.parseDuration`: `--expires`, the admin API): `s`, `m`, `h`, `d`,
///   `w`, required; a positive whole number (`90d`).
public enum DurationText {
    public struct Unit: Sendable, Equatable {
        public let suffix: String
        public let nanoseconds: Int64
    }

    /// Configuration durations' units, longest suffix first (`ms` before `m` and `s`).
    public static let configurationUnits: [Unit] = [
        Unit(suffix: "ms", nanoseconds: 1_000_000), Unit(suffix: "s", nanoseconds: 1_000_000_000),
        Unit(suffix: "m", nanoseconds: 60_000_000_000), Unit(suffix: "h", nanoseconds: 3_600_000_000_000),
    ]

    /// Key lifetimes' units.
    public static let lifetimeUnits: [Unit] = [
        Unit(suffix: "s", nanoseconds: 1_000_000_000), Unit(suffix: "m", nanoseconds: 60_000_000_000),
        Unit(suffix: "h", nanoseconds: 3_600_000_000_000), Unit(suffix: "d", nanoseconds: 86_400_000_000_000),
        Unit(suffix: "w", nanoseconds: 604_800_000_000_000),
    ]

    /// `text` without surrounding spaces, split into its number and the first of `units` whose
    /// suffix it ends with (nil, the whole text being the number, when it ends with none).
    public static func split(_ text: String, units: [Unit]) -> (number: Substring, unit: Unit?) {
        let t = text.trimmingCharacters(in: .whitespaces)
        for unit in units where t.hasSuffix(unit.suffix) {
            return (t.dropLast(unit.suffix.count), unit)
        }
        return (Substring(t), nil)
    }
}

/// A configuration duration: `250ms`, `2s`, `1.5s`, `5m`, `1h`, or a bare number of seconds
/// (`DurationText`); nil for anything else, for a negative or non-finite number, and for more
/// than 10^9 seconds (whose nanoseconds would not fit `Int64`: the conversion used to trap on
/// `1e300s`).
public func parseDuration(_ text: String) -> Duration? {
    let (number, unit) = DurationText.split(text, units: DurationText.configurationUnits)
    let scale = unit.map { Double($0.nanoseconds) / 1e9 } ?? 1
    guard let v = Double(number), v >= 0, v.isFinite else { return nil }
    let seconds = v * scale
    // Bounded where it enters, so the nanoseconds below cannot overflow; the reader then
    // refuses anything over `ConfigurationBounds.maxDuration` with its own message.
    guard seconds <= 1e9 else { return nil }
    return .nanoseconds(Int64(seconds * 1e9))
}
