// Differential fuzzing of RequestHeadParser and ChunkedBodyDecoder (Sources/TollgateCore/HTTP)
// against llhttp, configured as SwiftNIO's HTTPRequestDecoder configures it (no lenient flags;
// NIO also refuses an empty field name and a major version other than 1) — the decoder the
// gateway ran on before its own parser. llhttp is SwiftNIO's vendored copy (CNIOLLHTTP), linked
// as C objects and called directly: a run costs microseconds, where a decoder on an
// EmbeddedChannel would cost a pipeline, allocations and NIOPosix/NIOEmbedded in the link, and
// would hide what llhttp decided behind NIO's error mapping.
//
// Properties, for any bytes:
// - the gateway's outcome does not depend on how the bytes are split;
// - the gateway never accepts a head llhttp refuses, and never completes a head where llhttp
//   does not (a head llhttp accepts it may refuse: strictness is allowed);
// - where both accept: same end of head, method, target, version, fields (values without the
//   surrounding whitespace), framing flags, Content-Length and persistence;
// - bodies: a chunked body the gateway reads to its end, llhttp reads to the same end with the
//   same bytes; a Content-Length body is the same bytes.
import CNIOLLHTTP
import Foundation
import TollgateCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPHead(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let wire = Array(UnsafeBufferPointer(start: data, count: size))
    // Cut points from the bytes themselves: seeds stay plain HTTP, and mutations move the cuts.
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in wire { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
    let cuts = wire.isEmpty ? [] : (0..<Int(hash % 4)).map { k in Int((hash >> (8 + 13 * UInt64(k))) % UInt64(wire.count + 1)) }.sorted()

    let whole = parseHead(wire, cuts: [])
    let split = parseHead(wire, cuts: cuts)
    fuzzCheck(whole == split, "split at \(cuts) changes the head of \(show(wire)): \(split) vs \(whole)")

    let llhttp = LLHTTPRun(wire)
    switch whole {
    case .failure:
        break  // the gateway may be stricter than llhttp
    case .success(nil):
        fuzzCheck(!llhttp.headAccepted, "llhttp reads a head in \(show(wire)) where the gateway waits for more: \(llhttp)")
    case .success(let head?):
        fuzzCheck(llhttp.headAccepted, "the gateway accepts a head llhttp refuses: \(show(wire)), llhttp: \(llhttp)")
        compare(head, llhttp, wire)
    }
    return 0
}

private func parseHead(_ input: [UInt8], cuts: [Int]) -> Result<RequestHead?, RequestHeadError> {
    // llhttp does not require Host; requiring it would only add refusals (allowed anyway) and
    // keep the fuzzer from most of what lies behind a head.
    var parser = RequestHeadParser(requiresHost: false)
    for end in cuts + [input.count] {
        let step = input.withUnsafeBytes { all in
            Result { () throws(RequestHeadError) -> RequestHead? in try parser.parse(UnsafeRawBufferPointer(rebasing: all[0..<end])) }
        }
        if case .success(nil) = step { continue }
        return step
    }
    return .success(nil)
}

private func compare(_ head: RequestHead, _ llhttp: LLHTTPRun, _ wire: [UInt8]) {
    let what = show(wire)
    // The same end of head: llhttp completes it on exactly this prefix, not on a shorter one.
    fuzzCheck(LLHTTPRun(Array(wire[0..<head.length])).headComplete, "llhttp's head is longer than \(head.length) in \(what)")
    fuzzCheck(!LLHTTPRun(Array(wire[0..<(head.length - 1)])).headComplete, "llhttp's head is shorter than \(head.length) in \(what)")
    fuzzCheck(llhttp.method == methodNumber(head.method), "method \(head.method) vs llhttp \(llhttp.method) in \(what)")
    fuzzCheck(llhttp.url == Array(wire[head.target]), "target vs llhttp \(show(llhttp.url)) in \(what)")
    fuzzCheck(llhttp.major == 1 && llhttp.minor == (head.version == .http11 ? 1 : 0), "version \(head.version) vs llhttp \(llhttp.major).\(llhttp.minor) in \(what)")
    let fields = head.fields.map { (Array(wire[$0.name]), Array(wire[$0.value])) }
    fuzzCheck(fields.count == llhttp.fields.count
              && zip(fields, llhttp.fields).allSatisfy { $0.0 == $1.0 && $0.1 == trimmed($1.1) },
              "fields \(fields.map { show($0.0) + ": " + show($0.1) }) vs llhttp \(llhttp.fields.map { show($0.0) + ": " + show($0.1) }) in \(what)")
    var flags = 0
    if head.connectionOptions.contains(.keepAlive) { flags |= 0x1 }
    if head.connectionOptions.contains(.close) { flags |= 0x2 }
    if head.connectionOptions.contains(.upgrade) { flags |= 0x4 }
    if head.framing == .chunked { flags |= 0x8 | 0x200 }
    if head.upgrade { flags |= 0x10 }
    if head.known.contentLength != nil { flags |= 0x20 }
    fuzzCheck(flags == llhttp.flags & 0x23f, "flags \(flags) vs llhttp \(llhttp.flags) in \(what)")
    if case .contentLength(let n) = head.framing {
        fuzzCheck(UInt64(n) == llhttp.contentLength, "length \(n) vs llhttp \(llhttp.contentLength) in \(what)")
    }
    let keepAlive = llhttp.minor == 1 ? llhttp.flags & 0x2 == 0 : llhttp.flags & 0x1 != 0
    fuzzCheck(head.keepAlive == keepAlive, "keep-alive \(head.keepAlive) vs llhttp \(keepAlive) in \(what)")
    fuzzCheck(llhttp.upgrade == (head.method == .connect || (head.upgrade && head.connectionOptions.contains(.upgrade))),
              "upgrade vs llhttp \(llhttp.upgrade) in \(what)")

    let rest = Array(wire[head.length...])
    switch head.framing {
    case .none:
        // llhttp skips the body of an upgrade (it pauses); otherwise the message has ended.
        fuzzCheck(llhttp.messageComplete && llhttp.body.isEmpty, "llhttp reads a body after a head without framing in \(what): \(llhttp)")
    case .contentLength(let n):
        if rest.count >= n && !llhttp.upgrade {
            fuzzCheck(llhttp.messageComplete && llhttp.body == Array(rest[0..<n]), "llhttp reads another body of \(n) bytes in \(what): \(llhttp)")
        }
    case .chunked:
        let decoded = decode(rest, cuts: [])
        let decodedSplit = decode(rest, cuts: cutsFor(rest))
        fuzzCheck(decodedSplit == decoded, "split changes the chunked body of \(what): \(decodedSplit) vs \(decoded)")
        guard case .success(let body) = decoded else { break }  // refused: allowed
        if let end = body.end {
            fuzzCheck(llhttp.messageComplete && llhttp.body == body.data, "the gateway reads a chunked body llhttp does not in \(what): \(body) vs \(llhttp)")
            let prefix = Array(wire[0..<(head.length + end)])
            fuzzCheck(LLHTTPRun(prefix).messageComplete, "llhttp's body ends after \(head.length + end) in \(what)")
            fuzzCheck(!LLHTTPRun(Array(prefix.dropLast())).messageComplete, "llhttp's body ends before \(head.length + end) in \(what)")
        } else {
            fuzzCheck(!llhttp.messageComplete, "llhttp ends a chunked body the gateway does not in \(what): \(body) vs \(llhttp)")
        }
    }
}

private func cutsFor(_ bytes: [UInt8]) -> [Int] {
    var hash: UInt64 = 0x84222325cbf29ce4
    for b in bytes { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
    return bytes.isEmpty ? [] : (0..<Int(hash % 5)).map { k in Int((hash >> (7 + 11 * UInt64(k))) % UInt64(bytes.count + 1)) }
}

private struct Body: Equatable, CustomStringConvertible {
    var data: [UInt8] = []
    var end: Int?
    var description: String { "body \(show(data)) end \(end.map(String.init) ?? "-")" }
}

/// The chunked decoder over separate buffers cut at `cuts`.
private func decode(_ input: [UInt8], cuts: [Int]) -> Result<Body, ChunkedBodyError> {
    var decoder = ChunkedBodyDecoder(limits: .init(maxBodyBytes: 1 << 20))
    var body = Body()
    var start = 0
    for end in cuts.filter({ $0 > 0 && $0 < input.count }).sorted() + [input.count] where end >= start {
        let piece = Array(input[start..<end])
        var offset = 0
        reading: while true {
            let step = piece.withUnsafeBytes { buffer in
                Result { () throws(ChunkedBodyError) -> ChunkedBodyDecoder.Event in try decoder.next(buffer, from: &offset) }
            }
            switch step {
            case .failure(let error): return .failure(error)
            case .success(.data(let range)): body.data += piece[range]
            case .success(.needMore): break reading
            case .success(.end):
                body.end = start + offset
                return .success(body)
            }
        }
        start = end
    }
    return .success(body)
}

private func trimmed(_ value: [UInt8]) -> [UInt8] {
    var v = value[...]
    while let first = v.first, first == 0x20 || first == 0x09 { v.removeFirst() }
    while let last = v.last, last == 0x20 || last == 0x09 { v.removeLast() }
    return Array(v)
}

private func methodNumber(_ method: RequestHead.Method) -> Int {
    switch method {
    case .delete: 0
    case .get: 1
    case .head: 2
    case .post: 3
    case .put: 4
    case .connect: 5
    case .options: 6
    case .trace: 7
    case .patch: 28
    }
}

/// One run of llhttp over `bytes`, stopped after the first message.
private struct LLHTTPRun: CustomStringConvertible {
    var headComplete = false
    var messageComplete = false
    var method = -1
    var major = 0
    var minor = 0
    var flags = 0
    var contentLength: UInt64 = 0
    var upgrade = false
    var url: [UInt8] = []
    var fields: [([UInt8], [UInt8])] = []
    var emptyName = false
    var body: [UInt8] = []
    /// A chunk-size line was read: errors from here on are the body's.
    var chunkSeen = false
    var error: Int32 = 0
    var errorReason = ""

    /// What NIO's HTTPRequestDecoder made of the head: llhttp accepted it, and NIO's own checks
    /// (a field name, HTTP/1.x) passed. HPE_INVALID_TRANSFER_ENCODING right after
    /// on_headers_complete, when llhttp picks the framing, refuses the head too (the same code
    /// in a trailer, after a chunk, is the body's).
    var headAccepted: Bool {
        headComplete && !emptyName && major == 1
            && !(error == Int32(HPE_INVALID_TRANSFER_ENCODING.rawValue) && !messageComplete && !chunkSeen && body.isEmpty)
    }

    var description: String {
        "llhttp(head \(headComplete), message \(messageComplete), error \(error) \(errorReason), method \(method), "
            + "\(major).\(minor), flags \(flags), length \(contentLength), url \(show(url)), \(fields.count) fields, body \(show(body)))"
    }

    init(_ bytes: [UInt8]) {
        let recorder = Recorder()
        var settings = llhttp_settings_t()
        c_nio_llhttp_settings_init(&settings)
        settings.on_url = { p, at, n in Recorder.of(p).run.url += bytesAt(at, n); return 0 }
        settings.on_header_field = { p, at, n in
            let r = Recorder.of(p)
            if !r.run.headComplete { r.name += bytesAt(at, n) }
            return 0
        }
        settings.on_header_value = { p, at, n in
            let r = Recorder.of(p)
            if !r.run.headComplete { r.value += bytesAt(at, n) }
            return 0
        }
        settings.on_header_value_complete = { p in
            let r = Recorder.of(p)
            if !r.run.headComplete {
                if r.name.isEmpty { r.run.emptyName = true }
                r.run.fields.append((r.name, r.value))
                r.name = []
                r.value = []
            }
            return 0
        }
        settings.on_headers_complete = { p in
            let r = Recorder.of(p)
            let parser = p!.pointee
            r.run.headComplete = true
            r.run.method = Int(parser.method)
            r.run.major = Int(parser.http_major)
            r.run.minor = Int(parser.http_minor)
            r.run.flags = Int(parser.flags)
            r.run.contentLength = parser.content_length
            r.run.upgrade = parser.upgrade != 0
            return 0
        }
        settings.on_body = { p, at, n in Recorder.of(p).run.body += bytesAt(at, n); return 0 }
        settings.on_chunk_header = { p in Recorder.of(p).run.chunkSeen = true; return 0 }
        settings.on_message_complete = { p in
            Recorder.of(p).run.messageComplete = true
            return Int32(HPE_PAUSED.rawValue)  // the first message is all that is compared
        }
        var parser = llhttp_t()
        withUnsafeMutablePointer(to: &settings) { settings in
            c_nio_llhttp_init(&parser, HTTP_REQUEST, settings)
            parser.data = Unmanaged.passUnretained(recorder).toOpaque()
            let rc = bytes.withUnsafeBytes { buffer -> llhttp_errno_t in
                guard let base = buffer.baseAddress else { return HPE_OK }
                return c_nio_llhttp_execute(&parser, base.assumingMemoryBound(to: CChar.self), buffer.count)
            }
            if rc != HPE_OK && rc != HPE_PAUSED && rc != HPE_PAUSED_UPGRADE {
                recorder.run.error = Int32(rc.rawValue)
                recorder.run.errorReason = c_nio_llhttp_get_error_reason(&parser).map { String(cString: $0) } ?? ""
            }
        }
        self = recorder.run
    }

    private final class Recorder {
        var run = LLHTTPRun(empty: ())
        var name: [UInt8] = []
        var value: [UInt8] = []

        static func of(_ parser: UnsafeMutablePointer<llhttp_t>?) -> Recorder {
            Unmanaged<Recorder>.fromOpaque(parser!.pointee.data).takeUnretainedValue()
        }
    }

    private init(empty: ()) {}
}

private func bytesAt(_ at: UnsafePointer<CChar>?, _ count: Int) -> [UInt8] {
    guard let at, count > 0 else { return [] }
    return Array(UnsafeRawBufferPointer(start: at, count: count).bindMemory(to: UInt8.self))
}
