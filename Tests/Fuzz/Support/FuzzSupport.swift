// Shared by every fuzz target (compiled into each binary by scripts/fuzz).
import Foundation

/// Takes typed values off the front of a fuzz input, like LLVM's FuzzedDataProvider: the
/// generators stay deterministic for a given input, so a crash replays exactly.
struct FuzzData {
    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isEmpty: Bool { index >= bytes.count }

    mutating func byte() -> UInt8 {
        guard index < bytes.count else { return 0 }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func int(below bound: Int) -> Int {
        guard bound > 1 else { return 0 }
        var v: UInt64 = 0
        var range: UInt64 = 1
        for _ in 0..<8 where range < UInt64(bound) {
            v = v << 8 | UInt64(byte())
            range = range &<< 8
            if range == 0 { break }
        }
        return Int(v % UInt64(bound))
    }

    mutating func bool() -> Bool { byte() & 1 == 1 }

    mutating func bytes(upTo count: Int) -> [UInt8] {
        let n = min(int(below: count + 1), bytes.count - min(index, bytes.count))
        defer { index += n }
        return Array(bytes[index..<(index + n)])
    }

    mutating func rest() -> [UInt8] {
        defer { index = bytes.count }
        return index < bytes.count ? Array(bytes[index...]) : []
    }
}

/// Splits `bytes` into pieces at cut points chosen by `data` (at most `maxPieces`).
func pieces(of bytes: [UInt8], using data: inout FuzzData, maxPieces: Int = 8) -> [[UInt8]] {
    var cuts = (0..<data.int(below: maxPieces)).map { _ in data.int(below: bytes.count + 1) }
    cuts.append(contentsOf: [0, bytes.count])
    cuts.sort()
    return zip(cuts, cuts.dropFirst()).map { Array(bytes[$0..<$1]) }
}

/// A failed property: prints what differs and traps, so libFuzzer saves the input.
func fuzzFail(_ message: @autoclosure () -> String, file: StaticString = #file, line: UInt = #line) -> Never {
    FileHandle.standardError.write(Data("FUZZ PROPERTY FAILED (\(file):\(line)): \(message())\n".utf8))
    fatalError("fuzz property failed", file: file, line: line)
}

func fuzzCheck(_ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #file, line: UInt = #line) {
    if !condition { fuzzFail(message(), file: file, line: line) }
}

/// Optional checks of intended semantics not implemented yet, switched on by name:
/// `TOLLGATE_FUZZ_STRICT=last-duplicate,other` (or `all`).
func strictCheck(_ name: String) -> Bool {
    strictChecks.contains(name) || strictChecks.contains("all")
}

private let strictChecks: Set<String> = Set(
    (ProcessInfo.processInfo.environment["TOLLGATE_FUZZ_STRICT"] ?? "").split(separator: ",").map(String.init))

/// JSONSerialization's reading of `bytes`, when it is a JSON document (fragments allowed).
func foundationJSON(_ bytes: [UInt8]) -> Any? {
    try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
}

/// The start of an input, for a failure message.
func show(_ bytes: [UInt8]) -> String {
    String(decoding: bytes.prefix(300), as: UTF8.self).debugDescription
}

/// Equality of JSONSerialization values (numbers by value, as NSNumber compares them).
func sameJSON(_ a: Any, _ b: Any) -> Bool {
    switch (a, b) {
    case (let a as [String: Any], let b as [String: Any]):
        return a.count == b.count && a.allSatisfy { k, v in b[k].map { sameJSON(v, $0) } ?? false }
    case (let a as [Any], let b as [Any]):
        return a.count == b.count && zip(a, b).allSatisfy(sameJSON)
    case (let a as String, let b as String): return a == b
    case (is NSNull, is NSNull): return true
    case (let a as NSNumber, let b as NSNumber):
        // Through Double: a long integer comes back as NSDecimalNumber, its canonical
        // scientific spelling as a double.
        let x = a.doubleValue, y = b.doubleValue
        return x == y || abs(x - y) <= 1e-12 * max(abs(x), abs(y))
    default: return false
    }
}
