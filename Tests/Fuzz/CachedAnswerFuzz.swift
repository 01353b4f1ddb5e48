// CachedAnswer.decode on arbitrary bytes: never traps; what it accepts encodes back to the
// same bytes; any answer round-trips; one flipped byte of an entry is always refused.
import Foundation
@testable import TollgateCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCachedAnswer(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let answer = try? CachedAnswer.decode(bytes) {
        fuzzCheck(answer.encoded() == bytes, "decode then encode changes the entry: \(show(bytes))")
    }

    // An answer built from the input.
    var input = FuzzData(bytes)
    let status = 100 + input.int(below: 500)
    let contentType = String(decoding: input.bytes(upTo: 40).map { 0x20 + $0 % 0x5F }, as: UTF8.self)
    let model = String(decoding: input.bytes(upTo: 40), as: UTF8.self)
    // A time the gateway could have written (decode refuses times outside 1970...9999).
    let created = Int64(input.int(below: Int(CachedAnswer.validCreation.upperBound) + 1))
    let flip = input.int(below: 1 << 16)
    let mask = input.byte() | 1
    let answer = CachedAnswer(status: status, contentType: contentType, body: input.rest(), createdMs: created, model: model)
    var entry = answer.encoded()
    guard let decoded = try? CachedAnswer.decode(entry) else { fuzzFail("an encoded answer is refused: \(show(entry))") }
    fuzzCheck(decoded == answer, "round trip changes the answer")
    // CRC-32 detects every single-byte error.
    entry[flip % entry.count] ^= mask
    fuzzCheck((try? CachedAnswer.decode(entry)) == nil, "a corrupt entry is accepted: byte \(flip % entry.count)")
    return 0
}
