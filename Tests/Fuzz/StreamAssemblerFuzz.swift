// StreamAssembler on arbitrary server-sent events: never traps; the result does not depend on
// where the stream was split; an assembled answer is JSON that StreamReplayer can replay, and
// replaying and assembling again reaches a fixed point.
import Foundation
@testable import TollgateCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStreamAssembler(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input = FuzzData(Array(UnsafeBufferPointer(start: data, count: size)))
    let limit = input.bool() ? input.int(below: 4096) : Int.max
    let splits = FuzzData(input.bytes(upTo: 16))
    let stream = input.rest()

    var whole = StreamAssembler(limitBytes: limit)
    whole.feed(stream)
    var split = StreamAssembler(limitBytes: limit)
    var cuts = splits
    for piece in pieces(of: stream, using: &cuts, maxPieces: 16) { split.feed(piece) }
    let answer = whole.assembled()
    fuzzCheck(split.assembled() == answer && split.isAbandoned == whole.isAbandoned && split.sawDone == whole.sawDone,
              "splitting the stream changes the result: \(show(stream))")

    guard let answer else { return 0 }
    fuzzCheck((try? CacheJSONValue.parse(answer))?.members != nil, "assembled answer is not a JSON object: \(show(answer))")
    guard let once = replayAndAssemble(answer), let twice = replayAndAssemble(once) else {
        fuzzFail("an assembled answer does not replay: \(show(answer))")
    }
    fuzzCheck(once == twice, "replay/assemble is not a fixed point: \(show(once)) vs \(show(twice))")
    return 0
}
