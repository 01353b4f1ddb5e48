import Crypto

/// The SHA-256 of an API key, as four words so that a table lookup needs no string.
public struct KeyDigest: Hashable, Sendable {
    let a, b, c, d: UInt64

    /// Hashes a presented key. Runs once per request: contiguous bytes are hashed in place and
    /// the digest is read as four big-endian words, without intermediate arrays.
    public init<Bytes: Sequence>(hashing key: Bytes) where Bytes.Element == UInt8 {
        let digest = key.withContiguousStorageIfAvailable { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
            ?? SHA256.hash(data: Array(key))
        (a, b, c, d) = digest.withUnsafeBytes { raw in
            (UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
             UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
             UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
             UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)))
        }
    }

    /// Reads 64 lower-case hex digits, as stored in configuration.
    public init?(hex: String) {
        let bytes = Array(hex.utf8)
        guard bytes.count == 64 else { return nil }
        var words: [UInt64] = [0, 0, 0, 0]
        for (i, ch) in bytes.enumerated() {
            let v: UInt8
            switch ch {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = ch - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = ch - UInt8(ascii: "a") + 10
            default: return nil
            }
            words[i / 16] = words[i / 16] << 4 | UInt64(v)
        }
        (a, b, c, d) = (words[0], words[1], words[2], words[3])
    }

    public var hex: String {
        [a, b, c, d].map { w in
            let s = String(w, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }.joined()
    }

    /// Hex SHA-256 of a key, for writing configuration (`tollgate hash-key`).
    public static func hex(of key: String) -> String { KeyDigest(hashing: Array(key.utf8)).hex }
}
