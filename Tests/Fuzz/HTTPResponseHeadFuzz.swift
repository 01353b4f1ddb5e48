// Differential fuzzing of ResponseHeadParser and ChunkedBodyDecoder (Sources/TollgateCore/HTTP)
// on answers, against llhttp in HTTP_RESPONSE mode as SwiftNIO's HTTPResponseDecoder ran it (no
// lenient flags; NIO also refused an empty field name and a major version other than 1) — the
// decoder the gateway's upstream connections ran on before its own parser. llhttp is SwiftNIO's
// vendored copy (CNIOLLHTTP), called directly, as in HTTPHeadFuzz.swift.
//
// The request's method comes from the input's hash: an answer to HEAD or to another method.
//
// Properties, for any bytes:
// - the gateway's outcome does not depend on how the bytes are split;
// - the gateway never accepts a head llhttp refuses, and never completes a head where llhttp
//   does not (a head llhttp accepts it may refuse: strictness is allowed);
// - where both accept: same end of head, status, reason, version, fields (values without the
//   surrounding whitespace), connection and framing flags, Content-Length, persistence; and the
//   same framing: no body (the message ends at the head), the same Content-Length body, every
//   byte to the close, or the same chunked body to the same end.
import CNIOLLHTTP
import Foundation
import TollgateCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPResponseHead(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let wire = Array(UnsafeBufferPointer(start: data, count: size))
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in wire { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
    let cuts = wire.isEmpty ? [] : (0..<Int(hash % 4)).map { k in Int((hash >> (8 + 13 * UInt64(k))) % UInt64(wire.count + 1)) }.sorted()
    let toHEAD = (hash >> 60) & 0x7 == 0  // one answer in eight is to a HEAD

    let whole = parseHead(wire, cuts: [], toHEAD: toHEAD)
    let split = parseHead(wire, cuts: cuts, toHEAD: toHEAD)
    fuzzCheck(whole == split, "split at \(cuts) changes the head of \(show(wire)): \(split) vs \(whole)")

    let llhttp = LLHTTPResponseRun(wire, toHEAD: toHEAD)
    switch whole {
    case .failure:
        break  // the gateway may be stricter than llhttp
    case .success(nil):
        fuzzCheck(!llhttp.headAccepted, "llhttp reads a head in \(show(wire)) where the gateway waits for more: \(llhttp)")
    case .success(let head?):
        fuzzCheck(llhttp.headAccepted, "the gateway accepts a head llhttp refuses: \(show(wire)), llhttp: \(llhttp)")
        compare(head, llhttp, wire, toHEAD: toHEAD)
    }
    return 0
}

private func parseHead(_ input: [UInt8], cuts: [Int], toHEAD: Bool) -> Result<ResponseHead?, ResponseHeadError> {
    var parser = ResponseHeadParser()
    for end in cuts + [input.count] {
        let step = input.withUnsafeBytes { all in
            Result { () throws(ResponseHeadError) -> ResponseHead? in
                try parser.parse(UnsafeRawBufferPointer(rebasing: all[0..<end]), answeringHEAD: toHEAD)
            }
        }
        if case .success(nil) = step { continue }
        return step
    }
    return .success(nil)
}

private func compare(_ head: ResponseHead, _ llhttp: LLHTTPResponseRun, _ wire: [UInt8], toHEAD: Bool) {
    let what = show(wire) + (toHEAD ? " (to HEAD)" : "")
    fuzzCheck(LLHTTPResponseRun(Array(wire[0..<head.length]), toHEAD: toHEAD).headComplete, "llhttp's head is longer than \(head.length) in \(what)")
    fuzzCheck(!LLHTTPResponseRun(Array(wire[0..<(head.length - 1)]), toHEAD: toHEAD).headComplete, "llhttp's head is shorter than \(head.length) in \(what)")
    fuzzCheck(llhttp.status == head.status, "status \(head.status) vs llhttp \(llhttp.status) in \(what)")
    fuzzCheck(llhttp.reason == Array(wire[head.reason]), "reason vs llhttp \(show(llhttp.reason)) in \(what)")
    fuzzCheck(llhttp.major == 1 && llhttp.minor == (head.version == .http11 ? 1 : 0), "version \(head.version) vs llhttp \(llhttp.major).\(llhttp.minor) in \(what)")
    let fields = head.fields.map { (Array(wire[$0.name]), Array(wire[$0.value])) }
    fuzzCheck(fields.count == llhttp.fields.count
              && zip(fields, llhttp.fields).allSatisfy { $0.0 == $1.0 && $0.1 == trimmed($1.1) },
              "fields \(fields.map { show($0.0) + ": " + show($0.1) }) vs llhttp \(llhttp.fields.map { show($0.0) + ": " + show($0.1) }) in \(what)")
    var flags = 0
    if head.connectionOptions.contains(.keepAlive) { flags |= 0x1 }
    if head.connectionOptions.contains(.close) { flags |= 0x2 }
    if head.connectionOptions.contains(.upgrade) { flags |= 0x4 }
    if head.known.transferEncoding != nil { flags |= 0x8 | 0x200 }
    if head.known.contentLength != nil { flags |= 0x20 }
    fuzzCheck(flags == llhttp.flags & 0x22f, "flags \(flags) vs llhttp \(llhttp.flags) in \(what)")
    if let n = head.contentLength {
        fuzzCheck(UInt64(n) == llhttp.contentLength, "length \(n) vs llhttp \(llhttp.contentLength) in \(what)")
    }
    // A 101 hands the connection to another protocol: its persistence means nothing.
    guard head.status != 101 else {
        fuzzCheck(llhttp.messageComplete && llhttp.body.isEmpty, "llhttp reads a body after a 101 in \(what): \(llhttp)")
        return
    }
    fuzzCheck(head.keepAlive == llhttp.keepAlive, "keep-alive \(head.keepAlive) vs llhttp \(llhttp.keepAlive) in \(what)")

    let rest = Array(wire[head.length...])
    switch head.framing {
    case .none:
        fuzzCheck(llhttp.messageComplete && llhttp.body.isEmpty, "llhttp reads a body after a head without one in \(what): \(llhttp)")
    case .contentLength(let n):
        if rest.count >= n {
            fuzzCheck(llhttp.messageComplete && llhttp.body == Array(rest[0..<n]), "llhttp reads another body of \(n) bytes in \(what): \(llhttp)")
        } else {
            fuzzCheck(!llhttp.messageComplete && llhttp.body == rest, "llhttp ends a body of \(n) bytes early in \(what): \(llhttp)")
        }
    case .untilClose:
        fuzzCheck(!llhttp.messageComplete && llhttp.body == rest && llhttp.error == 0,
                  "llhttp does not read every byte to the close in \(what): \(llhttp)")
    case .chunked:
        let decoded = decode(rest, cuts: [])
        let decodedSplit = decode(rest, cuts: cutsFor(rest))
        fuzzCheck(decodedSplit == decoded, "split changes the chunked body of \(what): \(decodedSplit) vs \(decoded)")
        guard case .success(let body) = decoded else { break }  // refused: allowed
        if let end = body.end {
            fuzzCheck(llhttp.messageComplete && llhttp.body == body.data, "the gateway reads a chunked body llhttp does not in \(what): \(body) vs \(llhttp)")
            let prefix = Array(wire[0..<(head.length + end)])
            fuzzCheck(LLHTTPResponseRun(prefix, toHEAD: toHEAD).messageComplete, "llhttp's body ends after \(head.length + end) in \(what)")
            fuzzCheck(!LLHTTPResponseRun(Array(prefix.dropLast()), toHEAD: toHEAD).messageComplete, "llhttp's body ends before \(head.length + end) in \(what)")
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

/// One run of llhttp over `bytes` as an answer, stopped after the first message.
private struct LLHTTPResponseRun: CustomStringConvertible {
    var headComplete = false
    var messageComplete = false
    var status = 0
    var reason: [UInt8] = []
    var major = 0
    var minor = 0
    var flags = 0
    var contentLength: UInt64 = 0
    var keepAlive = false
    var fields: [([UInt8], [UInt8])] = []
    var emptyName = false
    var body: [UInt8] = []
    var chunkSeen = false
    var error: Int32 = 0
    var errorReason = ""
    var toHEAD = false

    /// What NIO's HTTPResponseDecoder made of the head: llhttp accepted it, and NIO's own checks
    /// (a field name, HTTP/1.x) passed.
    var headAccepted: Bool { headComplete && !emptyName && major == 1 }

    var description: String {
        "llhttp(head \(headComplete), message \(messageComplete), error \(error) \(errorReason), status \(status) \(show(reason)), "
            + "\(major).\(minor), flags \(flags), length \(contentLength), keep-alive \(keepAlive), \(fields.count) fields, body \(show(body)))"
    }

    init(_ bytes: [UInt8], toHEAD: Bool) {
        let recorder = Recorder()
        recorder.run.toHEAD = toHEAD
        var settings = llhttp_settings_t()
        c_nio_llhttp_settings_init(&settings)
        settings.on_status = { p, at, n in Recorder.of(p).run.reason += bytesAt(at, n); return 0 }
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
            r.run.headComplete = true
            r.run.status = Int(p!.pointee.status_code)
            r.run.major = Int(p!.pointee.http_major)
            r.run.minor = Int(p!.pointee.http_minor)
            r.run.flags = Int(p!.pointee.flags)
            r.run.contentLength = p!.pointee.content_length
            // NIO answers 1 here for a HEAD request (skip the body); llhttp sets F_SKIPBODY
            // after this callback, so it is set here first for `should_keep_alive`.
            if r.run.toHEAD { p!.pointee.flags |= UInt16(F_SKIPBODY.rawValue) }
            r.run.keepAlive = c_nio_llhttp_should_keep_alive(p) != 0
            return r.run.toHEAD ? 1 : 0
        }
        settings.on_body = { p, at, n in Recorder.of(p).run.body += bytesAt(at, n); return 0 }
        settings.on_chunk_header = { p in Recorder.of(p).run.chunkSeen = true; return 0 }
        settings.on_message_complete = { p in
            Recorder.of(p).run.messageComplete = true
            return Int32(HPE_PAUSED.rawValue)
        }
        var parser = llhttp_t()
        withUnsafeMutablePointer(to: &settings) { settings in
            c_nio_llhttp_init(&parser, HTTP_RESPONSE, settings)
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
        var run = LLHTTPResponseRun(empty: ())
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
