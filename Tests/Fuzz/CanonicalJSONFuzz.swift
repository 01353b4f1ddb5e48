// CanonicalJSON.canonicalize on arbitrary bytes: never traps; canonical forms are canonical
// (idempotent, valid JSON that JSONSerialization reads as the same value); and documents
// that differ only in ways JSON does not see (member order, whitespace, string escapes,
// number spelling) share their canonical form.
import Foundation
@testable import TollgateCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCanonicalJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input = FuzzData(Array(UnsafeBufferPointer(start: data, count: size)))
    let dropping = input.bool()
    let bytes = input.rest()
    let drop: Set<String> = dropping ? CanonicalJSON.defaultDropped : []
    let foundation = foundationJSON(bytes)
    guard let canonical = try? CanonicalJSON.canonicalize(bytes, dropping: drop) else {
        // Refused: must be something JSONSerialization refuses too, or one of the documented
        // refusals (deeper than 256, an exponent over 10^9, an unpaired surrogate escape).
        // JSONSerialization also reads a BOM, UTF-16 and trailing commas: not RFC 8259.
        if foundation != nil, bytes.first != 0xEF, !bytes.contains(0), isUTF8(bytes), !hasTrailingComma(bytes) {
            let deep = bytes.filter { $0 == UInt8(ascii: "[") || $0 == UInt8(ascii: "{") }.count > 256
            fuzzCheck(deep || hasLongExponent(bytes), "JSONSerialization reads what canonicalize refuses: \(show(bytes))")
        }
        return 0
    }
    guard let again = try? CanonicalJSON.canonicalize(canonical, dropping: drop) else {
        fuzzFail("canonical form does not parse: \(show(canonical))")
    }
    fuzzCheck(again == canonical, "not idempotent: \(show(canonical)) -> \(show(again))")
    if let foundation, !dropping, let reread = foundationJSON(canonical) {
        fuzzCheck(sameJSON(foundation, reread), "canonical form has another value: \(show(bytes)) -> \(show(canonical))")
    } else if foundation != nil, !dropping {
        fuzzFail("JSONSerialization refuses the canonical form \(show(canonical)) of \(show(bytes))")
    }

    // The same document, respelled.
    guard let tree = try? CacheJSONValue.parse(bytes) else { fuzzFail("canonicalize accepted what parse refuses") }
    var seed = FuzzData(Array(bytes.reversed()))
    var respelled: [UInt8] = []
    respell(tree, into: &respelled, using: &seed)
    guard let other = try? CanonicalJSON.canonicalize(respelled, dropping: drop) else {
        fuzzFail("respelled document refused: \(show(respelled))")
    }
    fuzzCheck(other == canonical, "respelling changes the canonical form: \(show(bytes)) as \(show(respelled)): \(show(canonical)) vs \(show(other))")
    return 0
}

/// Writes `value` with members shuffled (duplicates keep their relative order: the last wins),
/// random whitespace, some characters escaped and numbers written another way.
private func respell(_ value: CacheJSONValue, into out: inout [UInt8], using data: inout FuzzData) {
    func space() {
        for _ in 0..<data.int(below: 3) { out.append([0x20, 0x0A, 0x09, 0x0D][data.int(below: 4)]) }
    }
    space()
    switch value {
    case .null: out.append(contentsOf: "null".utf8)
    case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
    case .number(let text): out.append(contentsOf: respellNumber(text, using: &data).utf8)
    case .string(let s): respellString(s, into: &out, using: &data)
    case .array(let values):
        out.append(UInt8(ascii: "["))
        for (i, v) in values.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            respell(v, into: &out, using: &data)
        }
        space()
        out.append(UInt8(ascii: "]"))
    case .object(let members):
        // A random interleaving that keeps each name's members in order.
        var groups: [[(key: String, value: CacheJSONValue)]] = []
        var groupOf: [String: Int] = [:]
        for m in members {
            if let g = groupOf[m.key] { groups[g].append(m) } else { groupOf[m.key] = groups.count; groups.append([m]) }
        }
        var order: [(key: String, value: CacheJSONValue)] = []
        while !groups.isEmpty {
            let g = data.int(below: groups.count)
            order.append(groups[g].removeFirst())
            if groups[g].isEmpty { groups.remove(at: g) }
        }
        out.append(UInt8(ascii: "{"))
        for (i, m) in order.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            space()
            respellString(m.key, into: &out, using: &data)
            space()
            out.append(UInt8(ascii: ":"))
            respell(m.value, into: &out, using: &data)
        }
        space()
        out.append(UInt8(ascii: "}"))
    }
    space()
}

private func respellString(_ s: String, into out: inout [UInt8], using data: inout FuzzData) {
    out.append(UInt8(ascii: "\""))
    for scalar in s.unicodeScalars {
        let escape = data.int(below: 4) == 0
        switch scalar {
        case "\"": out.append(contentsOf: escape ? Array("\\u0022".utf8) : Array("\\\"".utf8))
        case "\\": out.append(contentsOf: escape ? Array("\\u005C".utf8) : Array("\\\\".utf8))
        case "/" where escape: out.append(contentsOf: "\\/".utf8)
        case "\n" where !escape: out.append(contentsOf: "\\n".utf8)
        case _ where scalar.value < 0x20 || escape:
            for unit in String(scalar).utf16 {
                let hex = String(unit, radix: 16, uppercase: data.bool())
                out.append(contentsOf: ("\\u" + String(repeating: "0", count: 4 - hex.count) + hex).utf8)
            }
        default: out.append(contentsOf: String(scalar).utf8)
        }
    }
    out.append(UInt8(ascii: "\""))
}

/// The same decimal value: trailing fraction zeros, an exponent, or the point moved.
private func respellNumber(_ text: String, using data: inout FuzzData) -> String {
    guard !text.contains("e"), !text.contains("E") else {
        return data.bool() ? text.replacingOccurrences(of: "e", with: "E") : text
    }
    switch data.int(below: 4) {
    case 0: return text.contains(".") ? text + "00" : text + ".0"
    case 1: return text + "e0"
    case 2:
        // 12.5 -> 125e-1
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2 else { return text == "0" || text == "-0" ? text + "e7" : text + "0E-1" }
        var mantissa = String(parts[0] + parts[1])
        let negative = mantissa.hasPrefix("-")
        if negative { mantissa.removeFirst() }
        while mantissa.count > 1, mantissa.hasPrefix("0") { mantissa.removeFirst() }
        return (negative ? "-" : "") + mantissa + "e-" + String(parts[1].count)
    default: return text
    }
}

/// `,` then `]` or `}` (whitespace between), outside strings.
private func hasTrailingComma(_ bytes: [UInt8]) -> Bool {
    var inString = false, escaped = false, comma = false
    for b in bytes {
        if inString {
            if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
            continue
        }
        switch b {
        case 0x20, 0x09, 0x0A, 0x0D: continue
        case UInt8(ascii: "]"), UInt8(ascii: "}"): if comma { return true }
        case UInt8(ascii: "\""): inString = true
        default: break
        }
        comma = b == UInt8(ascii: ",")
    }
    return false
}

private func isUTF8(_ bytes: [UInt8]) -> Bool {
    String(validating: bytes, as: UTF8.self) != nil
}

/// An exponent written with more than nine digits (refused on purpose: over 10^9).
private func hasLongExponent(_ bytes: [UInt8]) -> Bool {
    var run = 0
    var afterE = false
    for b in bytes {
        if b == UInt8(ascii: "e") || b == UInt8(ascii: "E") { afterE = true; run = 0; continue }
        if afterE, b == UInt8(ascii: "+") || b == UInt8(ascii: "-"), run == 0 { continue }
        if afterE, b >= 0x30, b <= 0x39 { run += 1; if run >= 10 { return true } } else { afterE = false }
    }
    return false
}
