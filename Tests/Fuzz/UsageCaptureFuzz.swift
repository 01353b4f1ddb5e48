// The data plane's usage capture (Sources/TollgateDataPlane/Forward/UsageCapture.swift, compiled
// into this target with NIOCore) and Core's UsageWatcher: the usage found does not depend on the reads;
// InjectedUsageFilter drops only usage-only events and gives the same stream and usage however
// the stream is split; bodyAskingForUsage keeps a JSON object valid.
import Foundation
import NIOCore
@testable import TollgateCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUsageCapture(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input = FuzzData(Array(UnsafeBufferPointer(start: data, count: size)))
    var splits = FuzzData(input.bytes(upTo: 16))
    let stream = input.rest()
    let reads = pieces(of: stream, using: &splits, maxPieces: 16)

    // UsageWatcher: the usage found does not depend on how the answer is split, and it is the
    // last one a whole-answer scan finds — within its design bounds: a `usage` object of at most
    // `maxObjectBytes`, and no run of backslashes longer than the bytes it keeps between parts.
    let backslashRun = stream.split(whereSeparator: { $0 != UInt8(ascii: "\\") }).map(\.count).max() ?? 0
    if stream.count <= UsageWatcher.maxObjectBytes && backslashRun < 32 {
        var watcherWhole = UsageWatcher()
        stream.withUnsafeBytes { watcherWhole.feed($0) }
        var watcherParts = UsageWatcher()
        for read in reads { read.withUnsafeBytes { watcherParts.feed($0) } }
        fuzzCheck(watcherWhole.usage == watcherParts.usage, "UsageWatcher: \(String(describing: watcherWhole.usage)) whole, \(String(describing: watcherParts.usage)) split: \(show(stream))")
        // The last part said to be the last (a length-framed answer's end): the same usage.
        var watcherLast = UsageWatcher()
        for (k, read) in reads.enumerated() { read.withUnsafeBytes { watcherLast.feed($0, last: k == reads.count - 1) } }
        fuzzCheck(watcherLast.usage == watcherParts.usage, "UsageWatcher: \(String(describing: watcherLast.usage)) with its last part marked, \(String(describing: watcherParts.usage)) without: \(show(stream))")
        if let found = UsageScanner.lastUsage(in: stream) {
            fuzzCheck(watcherWhole.usage == found, "UsageWatcher \(String(describing: watcherWhole.usage)) != last usage \(found) in \(show(stream))")
        }
    }

    // InjectedUsageFilter, whole and split.
    let whole = filtered([stream])
    let split = filtered(reads)
    fuzzCheck(whole.usage == split.usage, "usage \(String(describing: whole.usage)) whole, \(String(describing: split.usage)) split: \(show(stream))")
    fuzzCheck(withoutLineBreaks(whole.out) == withoutLineBreaks(split.out), "split changes the stream: \(show(stream)) -> \(show(whole.out)) vs \(show(split.out))")
    // Against a plain reading: events end at a blank line; usage-only ones are dropped.
    var kept: [UInt8] = []
    var usage: TokenUsage?
    for (event, complete) in events(stream) {
        if complete, event.withUnsafeBytes({ InjectedUsageFilter.hasEmptyChoices($0) }), let u = UsageScanner.lastUsage(in: event) {
            usage = u
        } else {
            kept += event
        }
    }
    fuzzCheck(split.usage == usage, "usage \(String(describing: split.usage)) != \(String(describing: usage)) in \(show(stream))")
    fuzzCheck(withoutLineBreaks(split.out) == withoutLineBreaks(kept), "filtered \(show(split.out)) != \(show(kept))")

    // A usage-only event as Python's json.dumps writes it (`"choices": []`, with a space).
    if strictCheck("spaced-usage-event") {
        var numbers = FuzzData(stream)
        let prompt = numbers.int(below: 100_000), completion = numbers.int(below: 100_000)
        let event = Array(#"data: {"id": "x", "choices": [], "usage": {"prompt_tokens": \#(prompt), "completion_tokens": \#(completion)}}"#.utf8) + [0x0A, 0x0A]
        let spaced = filtered([event])
        fuzzCheck(spaced.out.isEmpty && spaced.usage == TokenUsage(promptTokens: prompt, completionTokens: completion),
                  "a spaced usage-only event is forwarded: \(show(spaced.out)), usage \(String(describing: spaced.usage))")
    }

    // bodyAskingForUsage on a body the gateway forwards (RequestScanner accepted it; not
    // JSONSerialization alone, which reads trailing commas), with members: still JSON,
    // include_usage true.
    if (try? RequestScanner.scan(stream)) != nil, let object = foundationJSON(stream) as? [String: Any],
       !object.isEmpty || strictCheck("empty-body-usage") {
        let asked = bodyAskingForUsage(ByteBuffer(bytes: stream))
        let bytes = Array(asked.readableBytesView)
        guard var result = foundationJSON(bytes) as? [String: Any] else { fuzzFail("bodyAskingForUsage breaks \(show(stream)): \(show(bytes))") }
        let options = result.removeValue(forKey: "stream_options") as? [String: Any]
        fuzzCheck((options?["include_usage"] as? NSNumber)?.boolValue == true, "include_usage not true in \(show(bytes))")
        var original = object
        original.removeValue(forKey: "stream_options")
        fuzzCheck(sameJSON(result, original), "other members changed in \(show(bytes))")
    }
    return 0
}

private func filtered(_ reads: [[UInt8]]) -> (out: [UInt8], usage: TokenUsage?) {
    var filter = InjectedUsageFilter()
    var out: [UInt8] = []
    for read in reads {
        if let part = filter.filter(ByteBuffer(bytes: read)) { out += Array(part.readableBytesView) }
    }
    if let rest = filter.remainder() { out += Array(rest.readableBytesView) }
    return (out, filter.usage)
}

/// Events, each with the blank line that ends it; the last one may be unterminated.
/// Events as the SSE specification cuts them (WHATWG, "Parsing an event stream"), written here
/// apart from `SSELineReader`: a line ends at CRLF, LF or CR; an empty line ends an event.
private func events(_ b: [UInt8]) -> [(bytes: [UInt8], complete: Bool)] {
    var result: [(bytes: [UInt8], complete: Bool)] = []
    var start = 0, lineStart = 0, i = 0
    while i < b.count {
        guard b[i] == 0x0A || b[i] == 0x0D else { i += 1; continue }
        let empty = i == lineStart
        i += (b[i] == 0x0D && i + 1 < b.count && b[i + 1] == 0x0A) ? 2 : 1
        lineStart = i
        if empty {
            result.append((Array(b[start..<i]), true))
            start = i
        }
    }
    if start < b.count { result.append((Array(b[start...]), false)) }
    return result
}

private func contains(_ b: [UInt8], _ needle: String) -> Bool {
    let n = Array(needle.utf8)
    guard b.count >= n.count else { return false }
    return (0...(b.count - n.count)).contains { b[$0..<($0 + n.count)].elementsEqual(n) }
}

private func withoutLineBreaks(_ b: [UInt8]) -> [UInt8] { b.filter { $0 != 0x0A && $0 != 0x0D } }
