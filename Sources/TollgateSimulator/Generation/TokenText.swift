/// The simulated model's output: a deterministic sequence of words, one per token.
///
/// Token `i` of a completion is a word of a fixed 64-word vocabulary chosen by a SplitMix64 hash
/// of the request's text seed and `i`; each token is the word followed by a space. Same prompt,
/// same completion; the vocabulary needs no JSON escaping.
enum TokenText {
    /// The vocabulary, each word with its trailing space.
    static let vocabulary: [String] = [
        "the", "model", "is", "a", "small", "language", "that", "runs",
        "on", "one", "gpu", "and", "answers", "quickly", "with", "tokens",
        "from", "simulated", "text", "for", "tests", "of", "gateway", "request",
        "stream", "every", "word", "comes", "after", "another", "in", "order",
        "while", "clients", "wait", "patiently", "to", "see", "output", "this",
        "reply", "has", "no", "meaning", "but", "it", "looks", "plausible",
        "enough", "when", "read", "aloud", "by", "engineers", "who", "measure",
        "latency", "throughput", "under", "load", "each", "second", "counts", "well",
    ].map { $0 + " " }

    /// Token `index` of the completion seeded by `seed`.
    static func token(_ index: Int, seed: UInt64) -> String {
        Self.vocabulary[Int(Self.mix(seed &+ UInt64(index)) % UInt64(Self.vocabulary.count))]
    }

    /// The whole completion of `count` tokens.
    static func completion(count: Int, seed: UInt64) -> String {
        var text = ""
        text.reserveCapacity(count * 8)
        for index in 0..<count { text += Self.token(index, seed: seed) }
        return text
    }

    /// FNV-1a (64 bits) of the UTF-8 bytes of `text`.
    static func hash(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return hash
    }

    /// SplitMix64's finaliser: spreads nearby inputs far apart.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// An 8-dimensional unit vector derived from `text`: the simulated embedding.
    static func embedding(of text: String) -> [Float] {
        var state = Self.hash(text)
        var values: [Double] = []
        values.reserveCapacity(8)
        for _ in 0..<8 {
            state = Self.mix(state)
            values.append(Double(state >> 11) / Double(1 << 53) * 2 - 1)
        }
        let norm = values.reduce(0) { $0 + $1 * $1 }.squareRoot()
        return values.map { Float(norm > 0 ? $0 / norm : 0) }
    }
}
