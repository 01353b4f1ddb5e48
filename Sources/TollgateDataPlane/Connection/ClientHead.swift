import NIOCore
import NIOHTTP1
import TollgateCore

/// A request head as it arrived from the client: its bytes — a slice of the read, not a copy —
/// and where `RequestHeadParser` found its parts. The gateway reads the few values it acts on
/// (the path, `Authorization`, `X-Request-Id`, `Cache-Control`, `x-tollgate-priority`) from
/// these bytes, and the head it sends to an instance is written from them with its edits around
/// the original field lines (`Exchange.upstreamHead`): nothing is turned into a dictionary of
/// Strings on the way.
struct ClientHead {
    /// The head's bytes; `parsed`'s ranges count from the first readable byte.
    let bytes: ByteBuffer
    let parsed: RequestHead

    var method: HTTPMethod {
        switch parsed.method {
        case .get: .GET
        case .head: .HEAD
        case .post: .POST
        case .put: .PUT
        case .delete: .DELETE
        case .options: .OPTIONS
        case .patch: .PATCH
        case .trace: .TRACE
        case .connect: .CONNECT
        }
    }

    var isHTTP10: Bool { parsed.version == .http10 }
    var keepAlive: Bool { parsed.keepAlive }
    var switchesProtocol: Bool { parsed.switchesProtocol }
    var expectsContinue: Bool { parsed.expectsContinue }

    /// The body's declared length; nil for a chunked body (0 without a body).
    var contentLength: Int? {
        switch parsed.framing {
        case .none: 0
        case .contentLength(let n): n
        case .chunked: nil
        }
    }

    /// The request-target as sent (logs, the usage report's query).
    var target: String { string(parsed.target) }
    /// The target's path (up to "?").
    var path: String { string(parsed.path) }

    /// Whether the path is exactly `literal` (bytes compared, no String made).
    func pathIs(_ literal: StaticString) -> Bool {
        let range = parsed.path
        guard range.count == literal.utf8CodeUnitCount else { return false }
        return bytes.withUnsafeReadableBytes { bytes in
            let expected = literal.utf8Start
            for i in 0..<range.count where bytes[range.lowerBound + i] != expected[i] { return false }
            return true
        }
    }

    func string(_ range: Range<Int>) -> String {
        bytes.getString(at: bytes.readerIndex + range.lowerBound, length: range.count) ?? ""
    }

    /// The value of the field at `index` of `parsed.fields`, if there is one.
    func value(_ index: Int?) -> String? { index.map { string(parsed.fields[$0].value) } }

    var requestID: String? { value(parsed.known.requestID) }

    /// Every `Cache-Control` field's value, joined by commas (RFC 9110 §5.3); nil without one.
    var cacheControl: String? {
        guard let first = parsed.known.cacheControl else { return nil }
        if parsed.known.cacheControlCount == 1 { return value(first) }
        return bytes.withUnsafeReadableBytes { b in
            parsed.fields.indices.filter { $0 >= first && parsed.fieldName($0, in: b, is: "cache-control") }
                .map { value($0)! }.joined(separator: ",")
        }
    }

    /// `x-tollgate-priority`, the first one sent.
    var priority: String? {
        bytes.withUnsafeReadableBytes { b in
            parsed.known.tollgate.first { parsed.fieldName($0, in: b, is: "x-tollgate-priority") }.flatMap { value($0) }
        }
    }

    /// Reads `Authorization` in place (the key is hashed from the head's bytes).
    var credential: Authenticator.Credential {
        guard let index = parsed.known.authorization else { return .none }
        return bytes.withUnsafeReadableBytes { b in Authenticator.credential(parsed.value(index, in: b)) }
    }
}

/// What `RequestDecoder` hands `GatewayHandler`: a head, its body in parts, its end.
enum ClientRequestPart {
    case head(ClientHead)
    case body(ByteBuffer)
    case end
}
