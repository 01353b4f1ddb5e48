// RequestScanner.scan on arbitrary bytes: never traps, and agrees with Foundation's
// JSONSerialization on every document both read as a JSON object.
import Foundation
@testable import TollgateCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequestScanner(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let summary = try? RequestScanner.scan(bytes)
    if let summary, let range = summary.promptRange {
        // promptText's contract: an already validated JSON value.
        _ = bytes.withUnsafeBytes { RequestScanner.promptText(UnsafeRawBufferPointer(rebasing: $0[range])) }
    }

    // The scanner says it validates RFC 8259: what it accepts, JSONSerialization should read.
    if summary != nil, strictCheck("scanner-accepts") {
        fuzzCheck(foundationJSON(bytes) != nil, "the scanner accepts what JSONSerialization refuses: \(show(bytes))")
    }

    // The oracle: JSONSerialization for the values (last duplicate wins), CacheJSONValue for what
    // JSONSerialization hides (duplicates, number text). Both must read the document; the
    // scanner refuses on purpose a non-string `model`, a non-boolean `stream`, deep nesting, and
    // any `max_tokens`/`max_completion_tokens`/`n` that is not null or a whole number in its
    // range (`RequestBounds`), each occurrence of a duplicate included.
    guard let foundation = foundationJSON(bytes) as? [String: Any],
          let tree = try? CacheJSONValue.parse(bytes), let members = tree.members else { return 0 }
    func all(_ name: String) -> [CacheJSONValue] { members.filter { $0.key == name }.map(\.value) }
    let models = all("model"), streams = all("stream")
    func bounded(_ name: String, _ range: ClosedRange<Int>) -> Bool {
        all(name).allSatisfy { $0.isNull || wholeNumber($0).map(range.contains) == true }
    }
    guard models.allSatisfy({ $0.string != nil }),
          streams.allSatisfy({ if case .bool = $0 { return true }; return $0.isNull }),
          bounded("max_tokens", RequestBounds.maxTokens), bounded("max_completion_tokens", RequestBounds.maxTokens),
          bounded("n", RequestBounds.choices),
          depth(tree) <= RequestScanner.maxDepth else {
        return 0
    }
    guard let summary else { fuzzFail("JSONSerialization reads an object the scanner refuses: \(show(bytes))") }

    let model = foundation["model"] as? String
    // Escaped surrogate pairs in the model id are known to be captured as U+FFFD (see the
    // comment in Parser.string): checked with TOLLGATE_FUZZ_STRICT=escaped-model only.
    fuzzCheck(summary.model == model, "model \(String(describing: summary.model)) != \(String(describing: model)) in \(show(bytes))")
    let stream = (foundation["stream"] as? NSNumber)?.boolValue ?? false
    fuzzCheck(summary.stream == stream, "stream \(summary.stream) != \(stream) in \(show(bytes))")
    fuzzCheck(summary.hasSeed == (foundation["seed"].map { !($0 is NSNull) } ?? false), "seed in \(show(bytes))")

    // Whole numbers, from the last member of each name; vLLM's rule: max_completion_tokens when
    // given and not 0, else max_tokens.
    func whole(_ name: String) -> Int? { tree[name].flatMap(wholeNumber) }
    let completion = whole("max_completion_tokens").flatMap { $0 > 0 ? $0 : nil }
    let expected = completion ?? whole("max_tokens")
    fuzzCheck(summary.maxTokens == expected, "maxTokens \(String(describing: summary.maxTokens)) != \(String(describing: expected)) in \(show(bytes))")
    fuzzCheck(summary.choices == whole("n"), "n \(String(describing: summary.choices)) in \(show(bytes))")
    var includeUsage = false
    if let options = tree["stream_options"], case .bool(true)? = options["include_usage"] { includeUsage = true }
    fuzzCheck(summary.includeUsage == includeUsage, "includeUsage \(summary.includeUsage) != \(includeUsage) in \(show(bytes))")
    if case .number(let text)? = tree["temperature"] {
        let t = Double(text)
        fuzzCheck(summary.temperature == t, "temperature \(String(describing: summary.temperature)) != \(String(describing: t)) in \(show(bytes))")
    } else {
        fuzzCheck(summary.temperature == nil, "temperature \(String(describing: summary.temperature)) for a non-number in \(show(bytes))")
    }
    // The prompt's range holds the value of the last messages/prompt/input member.
    let prompt = members.last { ["messages", "prompt", "input"].contains($0.key) }?.value
    if let prompt {
        guard let range = summary.promptRange, range.lowerBound >= 0, range.upperBound <= bytes.count,
              let value = try? CacheJSONValue.parse(Array(bytes[range])) else {
            fuzzFail("promptRange \(String(describing: summary.promptRange)) is not a JSON value in \(show(bytes))")
        }
        fuzzCheck(value.encoded() == prompt.encoded(), "promptRange holds another value in \(show(bytes))")
    } else {
        fuzzCheck(summary.promptRange == nil, "promptRange without a prompt in \(show(bytes))")
    }
    return 0
}

/// Nesting depth, the top-level container counting 1.
private func depth(_ value: CacheJSONValue) -> Int {
    switch value {
    case .array(let values): return 1 + (values.map(depth).max() ?? 0)
    case .object(let members): return 1 + (members.map { depth($0.value) }.max() ?? 0)
    default: return 0
    }
}

/// `\uD800`...`\uDFFF` somewhere in the text.
private func hasSurrogateEscape(_ b: [UInt8]) -> Bool {
    guard b.count >= 4 else { return false }
    for i in 0..<(b.count - 3) where b[i] == UInt8(ascii: "\\") && b[i + 1] == UInt8(ascii: "u")
        && (b[i + 2] | 0x20) == UInt8(ascii: "d") && Array("89abAB".utf8).contains(b[i + 3]) {
        return true
    }
    return false
}

/// A JSON number with no fraction, in any notation (`24`, `24.0`, `2.4e1`), as the scanner and
/// Python's parsers read it; nil for anything else.
private func wholeNumber(_ value: CacheJSONValue) -> Int? {
    guard case .number(let text) = value else { return nil }
    if let n = Int(text) { return n }
    guard let d = Double(text), d.isFinite, d.rounded() == d, abs(d) <= 9.0e15 else { return nil }
    return Int(d)
}
