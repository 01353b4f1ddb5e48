// StreamReplayer on arbitrary stored answers: never traps; every event is `data: <JSON>\n\n`,
// the last `data: [DONE]`; assembling the replay gives back each choice's content or text,
// and replaying that again changes nothing.
import Foundation
@testable import TollgateCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStreamReplayer(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input = FuzzData(Array(UnsafeBufferPointer(start: data, count: size)))
    let includeUsage = input.bool()
    let answer = input.rest()
    guard let events = try? StreamReplayer.events(from: answer, includeUsage: includeUsage) else { return 0 }
    fuzzCheck(events.last == Array("data: [DONE]\n\n".utf8), "the last event is not [DONE]")
    // JSONSerialization refuses numbers past Double's range (`1E400`), which JSON allows.
    let foundationReads = foundationJSON(answer) != nil
    for event in events.dropLast() {
        let prefix = Array("data: ".utf8)
        fuzzCheck(event.starts(with: prefix) && event.suffix(2) == [0x0A, 0x0A], "malformed event \(show(event))")
        let json = Array(event.dropFirst(prefix.count).dropLast(2))
        fuzzCheck(!json.contains(0x0A) && !json.contains(0x0D), "a line break inside an event: \(show(event))")
        fuzzCheck((try? CacheJSONValue.parse(json))?.members != nil, "event is not a JSON object: \(show(event))")
        if foundationReads { fuzzCheck(foundationJSON(json) is [String: Any], "JSONSerialization refuses event \(show(event))") }
    }

    guard let tree = try? CacheJSONValue.parse(answer), let choices = tree["choices"]?.array, !choices.isEmpty else { return 0 }
    var assembler = StreamAssembler()
    for event in events { assembler.feed(event) }
    guard let assembled = assembler.assembled(), let result = try? CacheJSONValue.parse(assembled) else {
        fuzzFail("the replay of an answer with choices does not assemble: \(show(answer))")
    }
    // Content and text come back whole, when each choice has its own integer index.
    let indices = choices.enumerated().map { position, choice in choice["index"] == nil ? position : choice["index"]?.int }
    if indices.allSatisfy({ $0 != nil }), Set(indices.compactMap { $0 }).count == choices.count {
        let rebuilt = result["choices"]?.array ?? []
        for (choice, index) in zip(choices, indices) {
            guard let back = rebuilt.first(where: { $0["index"]?.int == index }) else {
                fuzzFail("choice \(index!) lost in \(show(answer))")
            }
            if result["object"]?.string == "chat.completion", let content = choice["message"]?["content"]?.string {
                fuzzCheck(back["message"]?["content"]?.string == content, "content of choice \(index!) changed in \(show(answer))")
            }
            if result["object"]?.string == "text_completion" {
                let text = choice["text"]?.string ?? ""
                fuzzCheck(back["text"]?.string == text, "text of choice \(index!) changed in \(show(answer))")
            }
        }
    }
    guard let again = replayAndAssemble(assembled), let third = replayAndAssemble(again) else {
        fuzzFail("a reassembled answer does not replay: \(show(assembled))")
    }
    fuzzCheck(again == third, "replay/assemble is not a fixed point: \(show(again)) vs \(show(third))")
    return 0
}
