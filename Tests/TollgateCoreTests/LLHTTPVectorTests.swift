import TollgateCore
import XCTest

/// The parser against llhttp's own request test vectors (LLHTTPRequestVectors.swift, from
/// nodejs/llhttp v9.3.0 test/request/*.md, the llhttp SwiftNIO vendors): where llhttp refuses a
/// head the gateway refuses it too; where llhttp accepts, the gateway reads the same method,
/// target, version, fields, framing and persistence — or refuses on purpose, as listed below.
/// Every vector is also fed split at every byte boundary.
final class LLHTTPVectorTests: XCTestCase {
    /// Heads llhttp accepts that the gateway refuses, and why.
    static let stricter: [String: RequestHeadError] = [
        // Methods beyond RFC 9110's and PATCH (WebDAV, RTSP, ICE, SSDP, caches, the QUERY draft).
        "method.md: ANNOUNCE request with RTSP": .unsupportedMethod,
        "method.md: LINK request": .unsupportedMethod,
        "method.md: LINK request (2)": .unsupportedMethod,
        "method.md: M-SEARCH request": .unsupportedMethod,
        "method.md: PURGE request": .unsupportedMethod,
        "method.md: QUERY request": .unsupportedMethod,
        "method.md: REPORT request": .unsupportedMethod,
        "method.md: SEARCH request": .unsupportedMethod,
        "method.md: SOURCE request": .unsupportedMethod,
        "method.md: SOURCE request with ICE": .unsupportedMethod,
        // RTSP/1.0: llhttp reads other protocols' versions; NIO let major version 1 through.
        "method.md: OPTIONS request with RTSP": .invalidVersion,
        // CONNECT has no content (RFC 9110 §9.3.6); llhttp ignores the Content-Length.
        "method.md: CONNECT with body": .contentWithConnect,
        // Targets outside RFC 3986: a fragment, `"`, `|`, userinfo (RFC 9110 §4.2.4).
        "transfer-encoding.md: POST with `chunked` as last transfer-encoding": .invalidTarget,
        "transfer-encoding.md: POST with `chunked` as last transfer-encoding (multiple headers)": .invalidTarget,
        "uri.md: Fragment in URI": .invalidTarget,
        "uri.md: Query URL with vertical bar character": .invalidTarget,
        "uri.md: Quotes in URI": .invalidTarget,
        "uri.md: `host:port` and basic auth": .invalidTarget,
        // `Connection: close, …, keep-alive`: llhttp's HTTP/1.1 closes, an HTTP/1.0 reading keeps alive.
        "connection.md: Sample": .conflictingConnectionOptions,
    ]

    /// NIO's HTTPRequestDecoder refuses what llhttp accepts with an empty field name or a major
    /// version other than 1 (HTTPDecoder.swift): that is the decoder the gateway ran on.
    static func asNIOReadsIt(_ expected: LLHTTPExpected) -> LLHTTPExpected {
        guard case .accepted(let head) = expected else { return expected }
        if head.version.0 != 1 { return .refused(code: 9, reason: "NIO: HTTP/\(head.version.0).x") }
        if head.fields.contains(where: { $0.0.isEmpty }) { return .refused(code: 10, reason: "NIO: empty field name") }
        return expected
    }

    /// llhttp's flags for what the gateway read (llhttp.h, enum llhttp_flags).
    static func flags(_ head: RequestHead) -> Int {
        var flags = 0
        if head.connectionOptions.contains(.keepAlive) { flags |= 0x1 }
        if head.connectionOptions.contains(.close) { flags |= 0x2 }
        if head.connectionOptions.contains(.upgrade) { flags |= 0x4 }
        if head.framing == .chunked { flags |= 0x8 | 0x200 }
        if head.upgrade { flags |= 0x10 }
        if head.known.contentLength != nil { flags |= 0x20 }
        return flags
    }

    func testTheGatewayReadsLLHTTPsVectorsAsLLHTTPDoesOrRefusesThemOnPurpose() {
        var refusedOnPurpose: [String: RequestHeadError] = [:]
        for vector in llhttpRequestVectors {
            let input = vector.bytes
            // llhttp does not require Host, so neither does the parser here (most vectors have
            // none): everything else is compared. RequestHeadParserTests covers the requirement.
            let outcome = parseEverySplit(input, requiresHost: false)
            switch (Self.asNIOReadsIt(vector.expected), outcome) {
            case (.refused, .failure), (.incomplete, .success(nil)), (.incomplete, .failure):
                break
            case (.refused(let code, let reason), _):
                XCTFail("\(vector.name): llhttp refuses (\(code) \(reason)), the gateway: \(outcome)")
            case (.incomplete, .success(let head?)):
                XCTFail("\(vector.name): llhttp waits for more, the gateway has a head: \(head)")
            case (.accepted, .failure(let error)):
                refusedOnPurpose[vector.name] = error
            case (.accepted, .success(nil)):
                XCTFail("\(vector.name): llhttp has a head, the gateway waits for more")
            case (.accepted(let expected), .success(let head?)):
                check(head, against: expected, input: input, vector.name)
            }
        }
        // Compared as text so that a new or lost refusal shows by name.
        XCTAssertEqual(refusedOnPurpose.mapValues(\.description), Self.stricter.mapValues(\.description),
                       "refused on purpose:\n" + refusedOnPurpose.sorted { $0.key < $1.key }
                        .map { "\"\($0.key)\": .\($0.value)," }.joined(separator: "\n"))
    }

    private func check(_ head: RequestHead, against expected: LLHTTPHead, input: [UInt8], _ name: String) {
        XCTAssertEqual(head.method.llhttpNumber, expected.method, "\(name): method")
        XCTAssertEqual(text(input, head.target), expected.url, "\(name): target")
        let version = head.version == .http11 ? (1, 1) : (1, 0)
        XCTAssertTrue(version == expected.version, "\(name): version \(version) vs \(expected.version)")
        let fields = head.fields.map { (text(input, $0.name), text(input, $0.value)) }
        XCTAssertEqual(fields.map(\.0), expected.fields.map(\.0), "\(name): field names")
        // llhttp's value spans keep trailing whitespace; the value is without it (RFC 9110 §5.5).
        XCTAssertEqual(fields.map(\.1), expected.fields.map { trimmed($0.1) }, "\(name): field values")
        XCTAssertEqual(Self.flags(head), expected.flags & 0x23f, "\(name): flags")
        if case .contentLength(let n) = head.framing { XCTAssertEqual(n, expected.contentLength, "\(name): length") }
        XCTAssertEqual(head.length, expected.end, "\(name): end of head")
        let llhttpKeepAlive = expected.version == (1, 1) ? expected.flags & 0x2 == 0 : expected.flags & 0x1 != 0
        XCTAssertEqual(head.keepAlive, llhttpKeepAlive, "\(name): keep-alive")
        // The body, as the gateway would read it.
        let rest = Array(input[head.length...])
        switch (head.framing, expected.body) {
        case (.none, .complete(let body, let end)):
            XCTAssertEqual(body, "", name)
            XCTAssertEqual(end, head.length, name)
        case (.contentLength(let n), .complete(let body, let end)):
            XCTAssertEqual(String(decoding: rest.prefix(n), as: UTF8.self), body, name)
            XCTAssertEqual(end, head.length + n, name)
        case (.chunked, .complete(let body, let end)):
            XCTAssertEqual(decodeEverySplit(rest), .success(Decoded(body: Array(body.utf8), end: end - head.length)), name)
        case (.chunked, .failed):
            if case .success(let decoded) = decodeEverySplit(rest), decoded.end != nil {
                XCTFail("\(name): llhttp refuses the body, the gateway reads \(decoded)")
            }
        case (_, .incomplete), (.none, .failed), (.contentLength, .failed):
            break
        }
    }

    private func trimmed(_ s: String) -> String {
        var v = Substring(s)
        while let last = v.last, last == " " || last == "\t" { v.removeLast() }
        return String(v)
    }
}
