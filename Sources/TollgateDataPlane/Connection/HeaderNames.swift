import NIOHTTP1

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

    /// The header names a `Connection` header lists (RFC 9110 7.6.1: hop-by-hop, not forwarded),
    /// lower-cased; nil when there is no `Connection` header or it names only `close`/`keep-alive`.
    static func listedInConnection(_ headers: HTTPHeaders) -> [[UInt8]]? {
        guard headers.contains(name: "connection") else { return nil }
        var names: [[UInt8]] = []
        for value in headers[canonicalForm: "connection"] {
            let name = value.lowercased()
            if name == "close" || name == "keep-alive" || name.isEmpty { continue }
            names.append(Array(name.utf8))
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

    /// Whether `name` equals one of `lowercased` (ASCII letters compared without case).
    @inline(__always)
    static func matches(_ name: String, anyOf lowercased: [[UInt8]]) -> Bool {
        var name = name
        return name.withUTF8 { bytes in
            for candidate in lowercased where candidate.count == bytes.count {
                if equalsIgnoringCase(bytes, candidate) { return true }
            }
            return false
        }
    }

    /// `x-tollgate-*`: what a client tells the gateway (`x-tollgate-priority`), not the instance.
    static let gatewayPrefix = Array("x-tollgate-".utf8)

    /// Whether `name` starts with `x-tollgate-` (any case).
    @inline(__always)
    static func isForTheGateway(_ name: String) -> Bool {
        var name = name
        return name.withUTF8 { bytes in
            bytes.count >= gatewayPrefix.count && equalsIgnoringCase(UnsafeBufferPointer(rebasing: bytes[..<gatewayPrefix.count]), gatewayPrefix)
        }
    }

    @inline(__always)
    static func matches(_ name: String, _ lowercased: [UInt8]) -> Bool {
        var name = name
        return name.withUTF8 { bytes in bytes.count == lowercased.count && equalsIgnoringCase(bytes, lowercased) }
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
