import NIOCore
import TollgateCore

/// For a stream whose usage the gateway asked for on the client's behalf: passes every SSE
/// event through except the usage-only one (`"choices":[]` with `usage`), whose counters it
/// keeps. Events split across reads are held back until complete; events end at an empty line
/// under `SSELineReader`'s rule (CRLF, LF or CR), as `StreamAssembler` reads them.
struct InjectedUsageFilter {
    private var carry: ByteBuffer?
    private(set) var usage: TokenUsage?

    /// What to forward of `part` (nil: nothing yet).
    mutating func filter(_ part: ByteBuffer) -> ByteBuffer? {
        var data: ByteBuffer
        if var held = carry {
            var p = part
            held.writeBuffer(&p)
            data = held
            carry = nil
        } else {
            data = part
        }
        // Up to the end of the last complete event.
        let end = data.withUnsafeReadableBytes { SSELineReader.lastEventEnd(in: $0) }
        guard end > 0 else {
            carry = data
            return nil
        }
        if end < data.readableBytes {
            carry = data.getSlice(at: data.readerIndex + end, length: data.readableBytes - end)
        }
        let complete = data.getSlice(at: data.readerIndex, length: end)!
        let hasUsageEvent = complete.withUnsafeReadableBytes { Self.hasEmptyChoices($0) }
        guard hasUsageEvent else { return complete }
        // Rebuild without the usage-only events.
        var out = ByteBuffer()
        out.reserveCapacity(complete.readableBytes)
        complete.withUnsafeReadableBytes { raw in
            var start = 0
            for stop in SSELineReader.eventEnds(in: raw) + [raw.count] where stop > start {
                let event = UnsafeRawBufferPointer(rebasing: raw[start..<stop])
                if Self.hasEmptyChoices(event), let u = UsageScanner.lastUsage(in: event) {
                    usage = u
                } else {
                    out.writeBytes(event)
                }
                start = stop
            }
        }
        return out.readableBytes > 0 ? out : nil
    }

    /// Whatever is held back when the stream ends (an unterminated last event).
    mutating func remainder() -> ByteBuffer? {
        defer { carry = nil }
        return carry
    }

    /// `"choices"` `:` `[` `]` with any JSON whitespace between them (Python's `json.dumps`
    /// writes `"choices": []`): the usage-only event.
    static func hasEmptyChoices(_ b: UnsafeRawBufferPointer) -> Bool {
        let key = Array("\"choices\"".utf8)
        guard b.count >= key.count + 3 else { return false }
        var i = 0
        while i <= b.count - key.count {
            if b[i] == UInt8(ascii: "\""), b[i + 1] == UInt8(ascii: "c") {
                var k = 2
                while k < key.count && b[i + k] == key[k] { k += 1 }
                if k == key.count {
                    var j = i + k
                    func space() { while j < b.count, b[j] == 0x20 || b[j] == 0x09 || b[j] == 0x0A || b[j] == 0x0D { j += 1 } }
                    space()
                    if j < b.count, b[j] == UInt8(ascii: ":") {
                        j += 1; space()
                        if j < b.count, b[j] == UInt8(ascii: "[") {
                            j += 1; space()
                            if j < b.count, b[j] == UInt8(ascii: "]") { return true }
                        }
                    }
                }
            }
            i += 1
        }
        return false
    }

    static func contains(_ b: UnsafeRawBufferPointer, _ needle: [UInt8]) -> Bool {
        guard b.count >= needle.count, let first = needle.first else { return false }
        var i = 0
        let last = b.count - needle.count
        while i <= last {
            if b[i] == first {
                var k = 1
                while k < needle.count && b[i + k] == needle[k] { k += 1 }
                if k == needle.count { return true }
            }
            i += 1
        }
        return false
    }
}

/// Adds `"stream_options":{"include_usage":true}` as the body's last member (JSON parsers of
/// OpenAI-compatible servers keep the last of duplicate members), so that a stream reports
/// its usage in a final event.
func bodyAskingForUsage(_ body: ByteBuffer) -> ByteBuffer {
    var view = body
    // The object's closing brace, and whether it has members (`{}` takes no comma).
    let found = body.withUnsafeReadableBytes { raw -> (end: Int, empty: Bool)? in
        var i = raw.count - 1
        while i >= 0, raw[i] != UInt8(ascii: "}") { i -= 1 }
        guard i >= 0 else { return nil }
        var j = i - 1
        while j >= 0, raw[j] == 0x20 || raw[j] == 0x09 || raw[j] == 0x0A || raw[j] == 0x0D { j -= 1 }
        return (i, j >= 0 && raw[j] == UInt8(ascii: "{"))
    }
    guard let found else { return body }
    var out = ByteBuffer()
    out.reserveCapacity(body.readableBytes + 48)
    var head = view.readSlice(length: found.end)!
    out.writeBuffer(&head)
    out.writeString(found.empty ? #""stream_options":{"include_usage":true}}"# : #","stream_options":{"include_usage":true}}"#)
    return out
}
