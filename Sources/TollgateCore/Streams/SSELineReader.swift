/// The line rule of server-sent events (WHATWG HTML, "Parsing an event stream"): a line ends at
/// CRLF, LF or CR, and an empty line ends an event. The gateway's one reader of that rule, for
/// both of its consumers: `StreamAssembler` (rebuilds a streamed answer for the cache) and the
/// data plane's `InjectedUsageFilter` (cuts a stream at event ends).
///
/// Bytes may be split anywhere: a CR that ends one call's bytes is a line end, and a LF at the
/// start of the next call's bytes is then taken as the rest of that CRLF, not as an empty line.
public struct SSELineReader: Sendable {
    private var pendingCR = false

    public init() {}

    /// Calls `line` for each line that ends within `bytes`, with the offsets of its content
    /// (`start..<end`, the terminator left out; the first line's content may continue bytes the
    /// caller kept from earlier calls) and of the byte after its terminator (`next`). `line`
    /// returns false to stop. Returns the offset where the unterminated rest of `bytes` begins
    /// (or where it stopped).
    @inline(__always)
    public mutating func scan(_ bytes: UnsafeRawBufferPointer,
                              line: (_ start: Int, _ end: Int, _ next: Int) -> Bool) -> Int {
        var i = 0
        if pendingCR, bytes.count > 0 {
            pendingCR = false
            if bytes[0] == 0x0A { i = 1 }
        }
        var start = i
        while i < bytes.count {
            let c = bytes[i]
            guard c == 0x0A || c == 0x0D else {
                i += 1
                continue
            }
            let end = i
            if c == 0x0D {
                if i + 1 < bytes.count {
                    if bytes[i + 1] == 0x0A { i += 1 }
                } else {
                    pendingCR = true
                }
            }
            i += 1
            guard line(start, end, i) else { return i }
            start = i
        }
        return start
    }

    /// The offsets just past each empty line (each event's end) in `bytes`, read from its start
    /// as the start of a line.
    public static func eventEnds(in bytes: UnsafeRawBufferPointer) -> [Int] {
        var reader = SSELineReader()
        var ends: [Int] = []
        _ = reader.scan(bytes) { start, end, next in
            if start == end { ends.append(next) }
            return true
        }
        return ends
    }

    /// The offset just past the last empty line in `bytes` (read from its start as the start of
    /// a line): where its last complete event ends; 0 when none does.
    public static func lastEventEnd(in bytes: UnsafeRawBufferPointer) -> Int {
        var reader = SSELineReader()
        var last = 0
        _ = reader.scan(bytes) { start, end, next in
            if start == end { last = next }
            return true
        }
        return last
    }
}
