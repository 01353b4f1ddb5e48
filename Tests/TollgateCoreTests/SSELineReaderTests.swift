import TollgateCore
import XCTest

/// `SSELineReader`: the one line rule (CRLF, LF or CR) of `StreamAssembler` and the data
/// plane's `InjectedUsageFilter`.
final class SSELineReaderTests: XCTestCase {
    private func lines(_ parts: [String]) -> [String] {
        var reader = SSELineReader()
        var out: [String] = []
        var carry: [UInt8] = []
        for part in parts {
            let bytes = Array(part.utf8)
            let rest = bytes.withUnsafeBytes { raw in
                reader.scan(raw) { start, end, _ in
                    out.append(String(decoding: carry + bytes[start..<end], as: UTF8.self))
                    carry = []
                    return true
                }
            }
            carry += bytes[rest...]
        }
        return out
    }

    private func ends(_ text: String) -> [Int] {
        Array(text.utf8).withUnsafeBytes { SSELineReader.eventEnds(in: $0) }
    }

    private func lastEnd(_ text: String) -> Int {
        Array(text.utf8).withUnsafeBytes { SSELineReader.lastEventEnd(in: $0) }
    }

    func testEveryLineEnding() {
        XCTAssertEqual(lines(["a\nb\r\nc\rd\n\n"]), ["a", "b", "c", "d", ""])
    }

    func testACRLFSplitAcrossPartsIsOneLineEnd() {
        XCTAssertEqual(lines(["data: x\r", "\ndata: y\r", "\r", "\n"]), ["data: x", "data: y", ""], "the last LF completes a CRLF")
        XCTAssertEqual(lines(["da", "ta: x\n", "\n"]), ["data: x", ""])
    }

    func testEventsEndAtAnEmptyLineUnderEveryRule() {
        XCTAssertEqual(ends("data: a\n\ndata: b\r\n\r\ndata: c\r\rdata: d\n\r\n"), [9, 20, 29, 39])
        XCTAssertEqual(lastEnd("data: a\n\ndata: b\n"), 9)
        XCTAssertEqual(lastEnd("data: a\r\n\r\n"), 11)
        XCTAssertEqual(lastEnd("data: a\r\r"), 9)
        XCTAssertEqual(lastEnd("data: a\n"), 0)
        XCTAssertEqual(lastEnd(""), 0)
    }
}
