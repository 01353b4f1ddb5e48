import TollgateCore

/// The answer replayed as a stream (with usage), then assembled again.
func replayAndAssemble(_ answer: [UInt8]) -> [UInt8]? {
    guard let events = try? StreamReplayer.events(from: answer, includeUsage: true) else { return nil }
    var assembler = StreamAssembler()
    for event in events { assembler.feed(event) }
    return assembler.assembled()
}
