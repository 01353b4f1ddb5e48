import NIOCore
@testable import TollgateRedis
import XCTest

/// The hiredis wrappers, without sockets.
final class HiredisTests: XCTestCase {
    func testEncodesCommandsBinarySafe() throws {
        var encoder = RESPEncoder()
        var out = ByteBuffer()
        try encoder.encode(["SET", "k", "v"], into: &out)
        XCTAssertEqual(out.readString(length: out.readableBytes), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")

        try encoder.encode([Array("SET".utf8), [], [0, 13, 10, 255]], into: &out)
        XCTAssertEqual(out.readBytes(length: out.readableBytes),
                       Array("*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\n".utf8) + [0, 13, 10, 255] + Array("\r\n".utf8))

        try encoder.encode([ByteBuffer(string: "GET"), ByteBuffer(string: "κλειδί")], into: &out)
        XCTAssertEqual(out.readString(length: out.readableBytes), "*2\r\n$3\r\nGET\r\n$12\r\nκλειδί\r\n")

        XCTAssertThrowsError(try encoder.encode([String](), into: &out)) { error in
            XCTAssertEqual((error as? RedisError)?.kind, .protocolError)
        }
        XCTAssertEqual(out.readableBytes, 0)
    }

    func testReadsRepliesIncrementally() throws {
        let reader = RESPReader()
        let wire = "+OK\r\n-ERR nope\r\n:-42\r\n$-1\r\n$5\r\na\r\nbc\r\n*3\r\n:1\r\n*1\r\n+x\r\n$0\r\n\r\n*-1\r\n"
        // One byte at a time: a reply is returned only once complete.
        var values: [RESPValue] = []
        for byte in wire.utf8 {
            try reader.feed(ByteBuffer(bytes: [byte]))
            while let value = try reader.next() { values.append(value) }
        }
        XCTAssertEqual(values, [
            .simpleString("OK"),
            .error("ERR nope"),
            .integer(-42),
            .null,
            .bulkString(Array("a\r\nbc".utf8)),
            .array([.integer(1), .array([.simpleString("x")]), .bulkString([])]),
            .null,
        ])
        XCTAssertNil(try reader.next())
    }

    func testMalformedReplyIsAProtocolError() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "!bogus\r\n"))
        XCTAssertThrowsError(try reader.next()) { error in
            XCTAssertEqual((error as? RedisError)?.kind, .protocolError, "\(error)")
        }
    }

    /// Found by fuzzing (Tests/Fuzz/regressions/RESPReader/huge-array-count): hiredis allocates
    /// an array's element pointers as soon as it reads the count, so `*2144783648` asked for
    /// 17 GB before a single element arrived.
    func testArrayCountOverTheLimitIsAProtocolError() throws {
        // The limit is 2^20 elements (RESPReader.maxArrayElements).
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "*1048577\r\n"))
        XCTAssertThrowsError(try reader.next()) { error in
            XCTAssertEqual((error as? RedisError)?.kind, .protocolError, "\(error)")
        }

        let exact = RESPReader()
        try exact.feed(ByteBuffer(string: "*1048576\r\n"))
        XCTAssertNil(try exact.next())
    }

    func testValueHelpers() {
        XCTAssertEqual(RESPValue.bulkString(Array("12".utf8)).int, 12)
        XCTAssertEqual(RESPValue.integer(7).string, "7")
        XCTAssertEqual(RESPValue.simpleString("OK").bytes, Array("OK".utf8))
        XCTAssertNil(RESPValue.null.bytes)
        XCTAssertTrue(RESPValue.null.isNull)
        XCTAssertEqual(RESPValue.array([.integer(1)]).array, [.integer(1)])
    }
}
