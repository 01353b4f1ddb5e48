/// Makes API keys: `tg-` and 43 base62 characters encoding 32 random bytes (256 bits).
enum KeyGenerator {
    static let keyPrefix = "tg-"
    /// Characters of a key kept in the clear as its prefix (`tg-` and 8 more).
    static let prefixLength = 11
    /// 62^43 > 2^256: 43 base62 digits hold any 32 bytes.
    static let encodedLength = 43
    private static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    static func makeKey<R: RandomNumberGenerator>(using generator: inout R) -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        for i in bytes.indices { bytes[i] = UInt8.random(in: .min ... .max, using: &generator) }
        return keyPrefix + base62(bytes)
    }

    static func makeKey() -> String {
        var generator = SystemRandomNumberGenerator()
        return makeKey(using: &generator)
    }

    /// The bytes as a big-endian number in base 62, left-padded with `0` to 43 digits.
    static func base62(_ bytes: [UInt8]) -> String {
        var number = bytes
        var digits: [UInt8] = []
        digits.reserveCapacity(encodedLength)
        for _ in 0..<encodedLength {
            var remainder = 0
            for i in number.indices {
                let value = remainder << 8 | Int(number[i])
                number[i] = UInt8(value / 62)
                remainder = value % 62
            }
            digits.append(alphabet[remainder])
        }
        precondition(number.allSatisfy { $0 == 0 }, "32 bytes fit in 43 base62 digits")
        return String(decoding: digits.reversed(), as: UTF8.self)
    }

    static func prefix(of key: String) -> String { String(key.prefix(prefixLength)) }
}
