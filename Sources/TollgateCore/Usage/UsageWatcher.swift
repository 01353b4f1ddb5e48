/// Finds an answer's `usage` wherever it is, as the answer passes in parts: at the end of a
/// JSON answer (as OpenAI-compatible servers put it), in a stream's last event, or anywhere
/// before several megabytes of other members. Memory is bounded: what is kept between parts is
/// the start of a `usage` object not yet complete (at most `maxObjectBytes`) or a few bytes
/// that may hold the start of the member name.
public struct UsageWatcher: Sendable {
    /// A `usage` object longer than this is not waited for.
    public static let maxObjectBytes = 4096
    /// Enough to see a member name split across parts and the backslashes before it.
    private static let keep = 64

    private var window: [UInt8] = []
    /// The last complete `usage` seen so far.
    public private(set) var usage: TokenUsage?

    public init() {}

    /// `last`: no part follows (the answer's length is reached), so nothing is kept for one —
    /// an answer read whole costs no copy and no allocation here.
    public mutating func feed(_ part: UnsafeRawBufferPointer, last: Bool = false) {
        guard part.count > 0 else { return }
        if window.isEmpty {
            // Nothing carried over (a whole answer in one part, or the first part): scanned where
            // it is, and only what may still matter is kept — not a copy of every answer.
            if let found = UsageScanner.lastUsage(in: part) { usage = found }
            if !last { window.append(contentsOf: UnsafeRawBufferPointer(rebasing: part[Self.keptFrom(part)...])) }
            return
        }
        window.append(contentsOf: part)
        let found = window.withUnsafeBytes { UsageScanner.lastUsage(in: $0) }
        if let found { usage = found }
        let drop = window.withUnsafeBytes { Self.keptFrom($0) }
        if drop > 0 { window.removeFirst(drop) }
    }

    /// Where what is kept of `bytes` starts: the first `"usage"` whose object may still be
    /// arriving (with a little before it), else a short tail.
    private static func keptFrom(_ bytes: UnsafeRawBufferPointer) -> Int {
        if let start = UsageScanner.firstIncompleteUsage(in: bytes), bytes.count - start <= Self.maxObjectBytes {
            return max(0, start - Self.keep)
        }
        return max(0, bytes.count - Self.keep)
    }
}

extension UsageScanner {
    /// The offset of the first `"usage"` member name (outside a string) whose object does not
    /// end within `bytes`; nil when there is none. The first: an object still open runs to the
    /// end, so it holds every later one (found by fuzzing: keeping only the last, inner one lost
    /// the outer object once it closed).
    static func firstIncompleteUsage(in bytes: UnsafeRawBufferPointer) -> Int? {
        let key = usageKey
        guard bytes.count >= key.count else { return nil }
        var i = 0
        while i <= bytes.count - key.count {
            if bytes[i] == UInt8(ascii: "\""), bytes[i + 1] == UInt8(ascii: "u") {
                var same = true
                for k in 0..<key.count where bytes[i + k] != key[k] { same = false; break }
                if same {
                    var slashes = 0
                    var j = i - 1
                    while j >= 0, bytes[j] == UInt8(ascii: "\\") { slashes += 1; j -= 1 }
                    if slashes % 2 == 0, !objectEnds(bytes, after: i + key.count) { return i }
                }
            }
            i += 1
        }
        return nil
    }

    /// Whether the `: { ... }` after a member name ends within `bytes` (or is not an object at all).
    private static func objectEnds(_ b: UnsafeRawBufferPointer, after start: Int) -> Bool {
        var i = start
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
        guard i < b.count else { return false }
        guard b[i] == UInt8(ascii: ":") else { return true }
        i += 1
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
        guard i < b.count else { return false }
        guard b[i] == UInt8(ascii: "{") else { return true }
        return closingBrace(b, openingAt: i) != nil
    }
}

