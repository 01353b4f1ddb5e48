/// A priority lane of the gateway's waiting line (`departments[].priority`). Freed slots go to
/// the highest lane that has a waiting request, with a starvation guard for the lower ones
/// (`AdmissionQueue`). A request may lower its own lane with `x-tollgate-priority`, never raise it.
public enum Lane: Int, Sendable, CaseIterable, Comparable, CustomStringConvertible {
    case interactive = 0
    case standard = 1
    case batch = 2

    public static func < (a: Lane, b: Lane) -> Bool { a.rawValue < b.rawValue }

    /// The name used in configuration, headers, metrics and the admin page.
    public var name: String {
        switch self {
        case .interactive: "interactive"
        case .standard: "standard"
        case .batch: "batch"
        }
    }

    public var description: String { name }

    public init?(name: some StringProtocol) {
        switch name.lowercased() {
        case "interactive": self = .interactive
        case "standard": self = .standard
        case "batch": self = .batch
        default: return nil
        }
    }

    /// The lane of a request of a department in `declared`, given the client's
    /// `x-tollgate-priority` header: it may only lower the lane. An unknown value is ignored
    /// (the department's lane stays), so a typo never raises anyone.
    public static func effective(declared: Lane, header: String?) -> Lane {
        guard let header else { return declared }
        var text = Substring(header)
        while let c = text.first, c == " " || c == "\t" { text.removeFirst() }
        while let c = text.last, c == " " || c == "\t" { text.removeLast() }
        guard let asked = Lane(name: text) else { return declared }
        return max(declared, asked)
    }
}
