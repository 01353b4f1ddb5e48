// ConfigurationLoader.parse on arbitrary text (one file, or two that merge) and parseDuration
// on its first line: never trap, and a configuration it accepts passes its own validation.
import Foundation
@testable import TollgateCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfiguration(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let text = String(decoding: bytes, as: UTF8.self)
    // The loader's scalar parsers, on the first line (YAML hardly ever reaches them with a
    // strange number: a config is 1,000 times slower to fuzz than a duration).
    let first = String(text.prefix { $0 != "\n" })
    if let d = parseDuration(first) { fuzzCheck(d >= .zero, "negative duration from \(first.debugDescription)") }
    if let config = try? ConfigurationLoader.parse(text, file: "fuzz.yaml") {
        let errors = ConfigurationLoader.validate(config, file: "fuzz.yaml")
        fuzzCheck(errors.isEmpty, "an accepted configuration fails validation: \(errors)")
    }
    // Two files, split at the first line that starts with "---8<".
    if let cut = text.range(of: "\n---8<") {
        _ = try? ConfigurationLoader.parse([("a.yaml", String(text[..<cut.lowerBound])), ("b.yaml", String(text[cut.upperBound...]))])
    }
    return 0
}
