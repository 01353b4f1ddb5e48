import TollgateCore

/// Header names the gateway drops or rewrites when it forwards a request or an answer,
/// matched without building a lower-cased copy of each name (`String.lowercased()` allocated a
/// new string per header, twice per request, on the hot path).
enum HeaderNames {
    /// Not passed from the client to an instance: hop-by-hop headers, the gateway's own key,
    /// and those the gateway sets itself (`x-forwarded-for` is extended, not dropped: see
    /// `isForwardedFor`).
    static let droppedFromRequest: [[UInt8]] = [
        "host", "authorization", "content-length", "transfer-encoding", "connection", "keep-alive",
        "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade", "expect", "x-request-id",
        "x-real-ip", "x-forwarded-proto",
    ].map { Array($0.utf8) }

    /// Not passed from an instance to the client: hop-by-hop headers, the request id the
    /// gateway sets itself, and `content-length`, which the response writer sets from the
    /// framing it chooses.
    static let droppedFromResponse: [[UInt8]] = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "x-request-id",
        "content-length",
    ].map { Array($0.utf8) }

    /// The header names a request's `Connection` fields list (RFC 9110 §7.6.1: hop-by-hop, not
    /// forwarded), lower-cased; nil when they name only `close`/`keep-alive`.
    static func listedInConnection(_ head: RequestHead, _ bytes: UnsafeRawBufferPointer) -> [[UInt8]]? {
        guard head.connectionOptions.contains(.other), let first = head.known.connection else { return nil }
        var names: [[UInt8]] = []
        for i in first..<head.fields.count where head.fieldName(i, in: bytes, is: "connection") {
            // A list of tokens (the parser checked it): split on commas, trim spaces and tabs.
            for token in head.value(i, in: bytes).split(separator: UInt8(ascii: ",")) {
                var name = token.drop { $0 == 0x20 || $0 == 0x09 }.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }
                while let last = name.last, last == 0x20 || last == 0x09 { name.removeLast() }
                if name.isEmpty || name == Array("close".utf8) || name == Array("keep-alive".utf8) { continue }
                names.append(name)
            }
        }
        return names.isEmpty ? nil : names
    }

    /// Whether the name at `range` in `bytes` equals one of `lowercased` (ASCII letters compared
    /// without case): for fields read from bytes (an instance's answer head).
    @inline(__always)
    static func matches(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, anyOf lowercased: [[UInt8]]) -> Bool {
        next: for candidate in lowercased where candidate.count == range.count {
            for i in 0..<range.count {
                var b = bytes[range.lowerBound &+ i]
                if b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") { b |= 0x20 }
                if b != candidate[i] { continue next }
            }
            return true
        }
        return false
    }

    static let forwardedFor = Array("x-forwarded-for".utf8)
    /// The scheme of an `Authorization` value, with its space.
    static let bearerPrefix = Array("bearer ".utf8)

    /// `x-tollgate-*`: what a client tells the gateway (`x-tollgate-priority`), not the instance.
    static let gatewayPrefix = Array("x-tollgate-".utf8)

    /// Whether `name` (bytes of a head) equals one of `lowercased`, ASCII letters without case.
    @inline(__always)
    static func matches(_ name: UnsafeRawBufferPointer, anyOf lowercased: [[UInt8]]) -> Bool {
        let bytes = name.assumingMemoryBound(to: UInt8.self)
        for candidate in lowercased where candidate.count == bytes.count {
            if equalsIgnoringCase(bytes, candidate) { return true }
        }
        return false
    }

    @inline(__always)
    static func matches(_ name: UnsafeRawBufferPointer, _ lowercased: [UInt8]) -> Bool {
        name.count == lowercased.count && equalsIgnoringCase(name.assumingMemoryBound(to: UInt8.self), lowercased)
    }

    /// Whether `name` (bytes of a head) starts with `x-tollgate-` (any case).
    @inline(__always)
    static func isForTheGateway(_ name: UnsafeRawBufferPointer) -> Bool {
        name.count >= gatewayPrefix.count
            && equalsIgnoringCase(UnsafeBufferPointer(rebasing: name.assumingMemoryBound(to: UInt8.self)[..<gatewayPrefix.count]), gatewayPrefix)
    }

    @inline(__always)
    private static func equalsIgnoringCase(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercased: [UInt8]) -> Bool {
        for i in 0..<bytes.count {
            var b = bytes[i]
            if b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") { b |= 0x20 }
            if b != lowercased[i] { return false }
        }
        return true
    }
}
