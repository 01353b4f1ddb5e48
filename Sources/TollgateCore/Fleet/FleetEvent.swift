/// What one replica tells the others through Redis pub/sub (channel `FleetEvent.channel`).
///
/// A message is one line of text: `tg1 <origin> <kind>[ <argument>]`. `origin` names the
/// sending process (random per start), so that a replica skips its own messages. Redis is
/// outside the gateway: `FleetMessage.parse` reads a message into bounded values and answers
/// nil for anything else (the receiver logs and drops it), never traps.
public enum FleetEvent: Sendable, Equatable {
    /// The key registry in Redis changed (a key created or revoked): read it again.
    case keysChanged
    /// Cached answers were purged: one department's, or all (nil).
    case purge(department: String?)
    /// Re-read the configuration and the admin key (`POST /admin/api/reload?fleet=1`).
    case reload
    /// An admin session ended (logout): the SHA-256 (hex) of its id.
    case logout(sessionDigest: String)

    /// The pub/sub channel every replica subscribes to.
    public static let channel = "tollgate:fleet"
}

public struct FleetMessage: Sendable, Equatable {
    public var origin: String
    public var event: FleetEvent

    /// The longest message accepted: the longest department name (256 bytes) and then some.
    public static let maxBytes = 512
    static let maxOriginBytes = 64
    static let maxArgumentBytes = 256

    public init(origin: String, event: FleetEvent) {
        self.origin = origin
        self.event = event
    }

    /// The wire form (see `FleetEvent`).
    public var encoded: String {
        switch event {
        case .keysChanged: "tg1 \(origin) keys"
        case .purge(let department): "tg1 \(origin) purge" + (department.map { " \($0)" } ?? "")
        case .reload: "tg1 \(origin) reload"
        case .logout(let digest): "tg1 \(origin) logout \(digest)"
        }
    }

    /// Reads a message; nil when it is not one (too long, not UTF-8, unknown kind, bad argument).
    public static func parse(_ bytes: [UInt8]) -> FleetMessage? {
        guard bytes.count <= maxBytes, let text = String(validating: bytes, as: UTF8.self) else { return nil }
        // Control characters (newlines included) are never part of a message.
        guard !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return nil }
        let parts = text.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count >= 3, parts[0] == "tg1" else { return nil }
        let origin = String(parts[1])
        guard !origin.isEmpty, origin.utf8.count <= maxOriginBytes,
              origin.utf8.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "-") }) else { return nil }
        let argument = parts.count == 4 ? String(parts[3]) : nil
        if let argument, argument.isEmpty || argument.utf8.count > maxArgumentBytes { return nil }
        let event: FleetEvent
        switch parts[2] {
        case "keys" where argument == nil: event = .keysChanged
        case "reload" where argument == nil: event = .reload
        case "purge": event = .purge(department: argument)
        case "logout":
            guard let argument, argument.utf8.count == 64,
                  argument.utf8.allSatisfy({ isHexDigit($0) }) else { return nil }
            event = .logout(sessionDigest: argument)
        default: return nil
        }
        return FleetMessage(origin: origin, event: event)
    }

    private static func isAlphanumeric(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
    }

    private static func isHexDigit(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "f")) || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
    }
}
