// The hiredis wrappers (Sources/TollgateRedis/Hiredis/Hiredis.swift): RESPReader on arbitrary
// bytes never traps and reads the same replies however the bytes arrive; replies encoded here
// and commands encoded by RESPEncoder come back as the same values.
import Foundation
import NIOCore
@testable import TollgateRedis

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRESPReader(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input = FuzzData(Array(UnsafeBufferPointer(start: data, count: size)))
    var splits = FuzzData(input.bytes(upTo: 16))
    let wire = input.rest()

    // Arbitrary bytes, whole and split.
    let whole = read([wire])
    let split = read(pieces(of: wire, using: &splits, maxPieces: 16))
    fuzzCheck(whole.values == split.values && whole.failed == split.failed,
              "split changes the replies of \(show(wire)): \(whole) vs \(split)")

    // Replies generated from the same bytes, encoded, read back in pieces.
    var gen = FuzzData(wire)
    var values: [RESPValue] = []
    var encoded: [UInt8] = []
    while !gen.isEmpty, values.count < 8 {
        let value = reply(&gen, depth: 0)
        values.append(value)
        encode(value, into: &encoded)
    }
    var cuts = FuzzData(Array(wire.reversed()))
    let back = read(pieces(of: encoded, using: &cuts, maxPieces: 16))
    fuzzCheck(!back.failed && back.values == values, "round trip of \(values): \(back) from \(show(encoded))")

    // Commands: RESPEncoder, then the reader.
    var args = FuzzData(wire)
    let arguments = (0..<(1 + args.int(below: 6))).map { _ in args.bytes(upTo: 64) }
    var encoder = RESPEncoder()
    var buffer = ByteBuffer()
    do { try encoder.encode(arguments, into: &buffer) } catch { fuzzFail("encode \(arguments): \(error)") }
    let command = read([Array(buffer.readableBytesView)])
    fuzzCheck(command.values == [.array(arguments.map { .bulkString($0) })], "command \(arguments) reads as \(command)")
    return 0
}

private func read(_ reads: [[UInt8]]) -> (values: [RESPValue], failed: Bool) {
    let reader = RESPReader()
    var values: [RESPValue] = []
    do {
        for bytes in reads {
            try reader.feed(ByteBuffer(bytes: bytes))
            while let value = try reader.next() { values.append(value) }
        }
    } catch {
        return (values, true)
    }
    return (values, false)
}

/// A reply hiredis 0.14 can read back: nesting up to 7 levels.
private func reply(_ data: inout FuzzData, depth: Int) -> RESPValue {
    func line() -> String {
        String(decoding: data.bytes(upTo: 24).map { 0x20 + $0 % 0x5F }, as: UTF8.self)
    }
    switch data.int(below: depth < 6 ? 6 : 5) {
    case 0: return .simpleString(line())
    case 1: return .error(line())
    case 2: return .integer(Int64(bitPattern: (0..<8).reduce(UInt64(0)) { v, _ in v << 8 | UInt64(data.byte()) }))
    case 3: return .bulkString(data.bytes(upTo: 64))
    case 4: return .null
    default: return .array((0..<data.int(below: 5)).map { _ in reply(&data, depth: depth + 1) })
    }
}

private func encode(_ value: RESPValue, into out: inout [UInt8]) {
    switch value {
    case .simpleString(let s): out += Array("+\(s)\r\n".utf8)
    case .error(let s): out += Array("-\(s)\r\n".utf8)
    case .integer(let n): out += Array(":\(n)\r\n".utf8)
    case .bulkString(let b): out += Array("$\(b.count)\r\n".utf8) + b + [0x0D, 0x0A]
    case .null: out += Array("$-1\r\n".utf8)
    case .array(let values):
        out += Array("*\(values.count)\r\n".utf8)
        for v in values { encode(v, into: &out) }
    }
}
