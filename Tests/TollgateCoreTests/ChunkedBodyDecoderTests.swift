import TollgateCore
import XCTest

/// What a decoder made of a body: the data, and where the body ended (nil: not yet).
struct Decoded: Equatable {
    var body: [UInt8]
    var end: Int?
}

/// Decodes `input` handed over in separate buffers cut at `cuts`, as reads arrive.
func decodeChunked(_ input: [UInt8], cuts: [Int] = [], limits: ChunkedBodyDecoder.Limits = .init(maxBodyBytes: 1 << 20)) -> Result<Decoded, ChunkedBodyError> {
    var decoder = ChunkedBodyDecoder(limits: limits)
    var decoded = Decoded(body: [], end: nil)
    var start = 0
    for end in cuts.filter({ $0 > 0 && $0 < input.count }).sorted() + [input.count] where end >= start {
        let piece = Array(input[start..<end])  // a buffer of its own: ranges are into it alone
        var offset = 0
        reading: while true {
            let step = piece.withUnsafeBytes { buffer in
                Result { () throws(ChunkedBodyError) -> ChunkedBodyDecoder.Event in try decoder.next(buffer, from: &offset) }
            }
            switch step {
            case .failure(let error):
                return .failure(error)
            case .success(.data(let range)):
                XCTAssertFalse(range.isEmpty)
                decoded.body += piece[range]
            case .success(.needMore):
                XCTAssertEqual(offset, piece.count)
                break reading
            case .success(.end):
                decoded.end = start + offset
                return .success(decoded)
            }
        }
        start = end
    }
    return .success(decoded)
}

/// The outcome whole, asserting it is the same for every two-piece split and byte by byte.
func decodeEverySplit(_ input: [UInt8], limits: ChunkedBodyDecoder.Limits = .init(maxBodyBytes: 1 << 20),
                      file: StaticString = #filePath, line: UInt = #line) -> Result<Decoded, ChunkedBodyError> {
    let whole = decodeChunked(input, limits: limits)
    for cut in 0...input.count {
        let split = decodeChunked(input, cuts: [cut], limits: limits)
        if split != whole {
            XCTFail("split at \(cut): \(split) instead of \(whole)", file: file, line: line)
            break
        }
    }
    XCTAssertEqual(decodeChunked(input, cuts: Array(0..<input.count), limits: limits), whole, "byte by byte", file: file, line: line)
    return whole
}

final class ChunkedBodyDecoderTests: XCTestCase {
    func testChunksTheirDataAndTheEnd() {
        let input = bytes("5\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nPOST / HTTP/1.1")
        XCTAssertEqual(decodeEverySplit(input),
                       .success(Decoded(body: bytes("helloabcdefghijklmnopqrstuvwxyz"), end: input.count - 15)))
    }

    func testSizesInEitherCaseAndWithLeadingZeros() {
        XCTAssertEqual(decodeEverySplit(bytes("0A\r\n0123456789\r\n000\r\n\r\n")).map(\.body), .success(bytes("0123456789")))
        XCTAssertEqual(decodeEverySplit(bytes("a\r\n0123456789\r\n0\r\n\r\n")).map(\.body), .success(bytes("0123456789")))
    }

    func testAnIncompleteBodyWaits() {
        XCTAssertEqual(decodeEverySplit(bytes("5\r\nhel")), .success(Decoded(body: bytes("hel"), end: nil)))
        XCTAssertEqual(decodeEverySplit(bytes("5\r\nhello\r\n0\r\n")), .success(Decoded(body: bytes("hello"), end: nil)))
    }

    func testExtensionsAreCheckedAndIgnored() {
        let ok = ["5;a\r\nhello\r\n0\r\n\r\n", "5;a=b;c=\"d;\\\"e\"\r\nhello\r\n0;last\r\n\r\n", "5;a=b;c\r\nhello\r\n0\r\n\r\n"]
        for input in ok {
            XCTAssertEqual(decodeEverySplit(bytes(input)).map(\.body), .success(bytes("hello")), input.debugDescription)
        }
        let bad: [(String, ChunkedBodyError)] = [
            ("5 ;a\r\nhello\r\n0\r\n\r\n", .invalidChunkSize),
            ("5;\r\nhello\r\n0\r\n\r\n", .invalidChunkExtension),
            ("5; a\r\nhello\r\n0\r\n\r\n", .invalidChunkExtension),
            ("5;a =b\r\nhello\r\n0\r\n\r\n", .invalidChunkExtension),
            ("5;a=\r\nhello\r\n0\r\n\r\n", .invalidChunkExtension),
            ("5;a=b=c\r\nhello\r\n0\r\n\r\n", .invalidChunkExtension),
            ("5;a=\"b\r\nhello\r\n0\r\n\r\n", .invalidChunkExtension),
            ("5;a=\"b\"c\r\nhello\r\n0\r\n\r\n", .invalidChunkExtension),
            ("5;a=\"\u{0}\"\r\nhello\r\n0\r\n\r\n", .invalidChunkExtension),
        ]
        for (input, error) in bad {
            XCTAssertEqual(decodeEverySplit(bytes(input)), .failure(error), input.debugDescription)
        }
        let long = "5;" + String(repeating: "a", count: 2000) + "\r\nhello\r\n0\r\n\r\n"
        XCTAssertEqual(decodeChunked(bytes(long)), .failure(.chunkLineTooLong))
        XCTAssertEqual(decodeChunked(bytes(long), limits: .init(maxBodyBytes: 100, maxExtensionBytes: 4096)).map(\.body), .success(bytes("hello")))
    }

    func testMalformedFramingIsRefused() {
        let cases: [(String, ChunkedBodyError)] = [
            ("\r\nhello\r\n0\r\n\r\n", .invalidChunkSize),
            ("x\r\n", .invalidChunkSize),
            ("-1\r\n", .invalidChunkSize),
            ("5 \r\nhello\r\n0\r\n\r\n", .invalidChunkSize),
            ("5\t\r\nhello\r\n0\r\n\r\n", .invalidChunkSize),
            ("5\nhello\r\n0\r\n\r\n", .invalidChunkSize),
            ("5\rhello\r\n0\r\n\r\n", .bareCarriageReturn),
            ("5\r\nhelloX\r\n0\r\n\r\n", .missingCRLFAfterData),
            ("5\r\nhello\n0\r\n\r\n", .missingCRLFAfterData),
            ("5\r\nhello\rX0\r\n\r\n", .missingCRLFAfterData),
            ("5\r\nhello\r\n0\r\n\n", .bareLineFeed),
            ("5\r\nhello\r\n0\r\n\rX", .bareCarriageReturn),
            ("10000000000000000\r\n", .chunkSizeTooLarge),
            ("00000000000000001\r\n", .chunkSizeTooLarge),
            ("8000000000000000\r\n", .chunkSizeTooLarge),
        ]
        for (input, error) in cases {
            XCTAssertEqual(decodeEverySplit(bytes(input)), .failure(error), input.debugDescription)
        }
    }

    func testTrailersAreCheckedBoundedAndDropped() {
        let input = bytes("5\r\nhello\r\n0\r\nX-Checksum: abc\r\nY:\r\nContent-Length-X: 1\r\nHosts: a\r\n\r\nNEXT")
        XCTAssertEqual(decodeEverySplit(input), .success(Decoded(body: bytes("hello"), end: input.count - 4)))
        let bad: [(String, ChunkedBodyError)] = [
            ("0\r\nX : y\r\n\r\n", .invalidTrailer),
            ("0\r\n y\r\n\r\n", .invalidTrailer),
            ("0\r\nX: y\r\n folded\r\n\r\n", .invalidTrailer),
            ("0\r\nX: \u{0}\r\n\r\n", .invalidTrailer),
            ("0\r\nX: y\n\r\n", .bareLineFeed),
            ("0\r\nX: y\rZ\r\n", .bareCarriageReturn),
            ("0\r\nContent-Length: 5\r\n\r\n", .forbiddenTrailer),
            ("0\r\nTRANSFER-ENCODING: chunked\r\n\r\n", .forbiddenTrailer),
            ("0\r\nX: y\r\nConnection: close\r\n\r\n", .forbiddenTrailer),
            ("0\r\nHost: x\r\n\r\n", .forbiddenTrailer),
            ("0\r\nAuthorization: Bearer x\r\n\r\n", .forbiddenTrailer),
        ]
        for (input, error) in bad {
            XCTAssertEqual(decodeEverySplit(bytes(input)), .failure(error), input.debugDescription)
        }
        let many = "0\r\n" + String(repeating: "X-Padding: 0123456789\r\n", count: 200) + "\r\n"
        XCTAssertEqual(decodeChunked(bytes(many)), .failure(.trailersTooLarge))
    }

    func testTheBodyLimitIsCheckedOnTheAnnouncedSize() {
        let limits = ChunkedBodyDecoder.Limits(maxBodyBytes: 8)
        XCTAssertEqual(decodeEverySplit(bytes("5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"), limits: limits).map(\.body), .success(bytes("helloabc")))
        // Refused at the size line, before any of the chunk's bytes arrive.
        XCTAssertEqual(decodeChunked(bytes("5\r\nhello\r\n4\r\n"), limits: limits), .failure(.bodyTooLarge))
    }

    func testAfterTheEndOrARefusalTheDecoderStays() throws {
        var decoder = ChunkedBodyDecoder(limits: .init(maxBodyBytes: 10))
        var offset = 0
        let done = bytes("0\r\n\r\n")
        XCTAssertEqual(try done.withUnsafeBytes { try decoder.next($0, from: &offset) }, .end)
        XCTAssertTrue(decoder.isComplete)
        offset = 0
        XCTAssertEqual(try bytes("garbage").withUnsafeBytes { try decoder.next($0, from: &offset) }, .end)
        XCTAssertEqual(offset, 0)

        var failed = ChunkedBodyDecoder(limits: .init(maxBodyBytes: 10))
        offset = 0
        XCTAssertThrowsError(try bytes("zz").withUnsafeBytes { try failed.next($0, from: &offset) })
        offset = 0
        XCTAssertThrowsError(try done.withUnsafeBytes { try failed.next($0, from: &offset) }) { error in
            XCTAssertEqual(error as? ChunkedBodyError, .invalidChunkSize)
        }
    }
}
