/// An answer as the response cache stores it: the non-stream JSON (a full `chat.completion`,
/// `text_completion` or embeddings object), whatever way it arrived.
public struct CachedAnswer: Sendable, Equatable {
    /// The upstream's status; only 200 answers are stored.
    public var status: Int
    public var contentType: String
    /// The non-stream JSON answer.
    public var body: [UInt8]
    /// When the answer was stored, in milliseconds since 1970.
    public var createdMs: Int64
    /// The model that answered.
    public var model: String

    public init(status: Int = 200, contentType: String = "application/json", body: [UInt8], createdMs: Int64, model: String) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.createdMs = createdMs
        self.model = model
    }

    /// `TGCA`, then the version.
    private static let magic: [UInt8] = Array("TGCA".utf8)
    private static let version: UInt8 = 1

    /// The stored form:
    ///
    ///     "TGCA" version(1)  status(u16)  createdMs(i64)
    ///     len(u32) contentType  len(u32) model  len(u32) body  crc32(u32)
    ///
    /// integers big-endian, strings UTF-8; the CRC-32 (IEEE) covers every byte before it.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(body.count + contentType.utf8.count + model.utf8.count + 31)
        out.append(contentsOf: CachedAnswer.magic)
        out.append(CachedAnswer.version)
        Self.append(UInt64(UInt16(clamping: status)), bytes: 2, to: &out)
        Self.append(UInt64(bitPattern: createdMs), bytes: 8, to: &out)
        for field in [Array(contentType.utf8), Array(model.utf8), body] {
            Self.append(UInt64(field.count), bytes: 4, to: &out)
            out.append(contentsOf: field)
        }
        Self.append(UInt64(CRC32.checksum(out)), bytes: 4, to: &out)
        return out
    }

    /// Reads a stored entry. Throws `CacheFormatError` on anything but an intact entry of this
    /// version: wrong magic or version, truncation, trailing bytes, a checksum mismatch, a
    /// status outside 100...599, text that is not UTF-8 or a content type that is not printable
    /// ASCII. Never traps.
    public static func decode(_ bytes: [UInt8]) throws(CacheFormatError) -> CachedAnswer {
        guard bytes.count >= magic.count + 1 + 2 + 8 + 3 * 4 + 4 else { throw CacheFormatError("cache entry truncated") }
        guard bytes[0..<magic.count].elementsEqual(magic) else { throw CacheFormatError("not a cache entry") }
        guard bytes[magic.count] == version else { throw CacheFormatError("cache entry version \(bytes[magic.count]) unsupported") }
        let end = bytes.count - 4
        let stored = UInt32(truncatingIfNeeded: read(bytes, at: end, count: 4))
        guard stored == CRC32.checksum(bytes[0..<end]) else { throw CacheFormatError("cache entry checksum mismatch") }

        var i = magic.count + 1
        let status = Int(read(bytes, at: i, count: 2))
        i += 2
        let created = Int64(bitPattern: read(bytes, at: i, count: 8))
        i += 8
        var fields: [[UInt8]] = []
        for _ in 0..<3 {
            guard end - i >= 4 else { throw CacheFormatError("cache entry truncated") }
            let length = Int(read(bytes, at: i, count: 4))
            i += 4
            guard length <= end - i else { throw CacheFormatError("cache entry truncated") }
            fields.append(Array(bytes[i..<(i + length)]))
            i += length
        }
        guard i == end else { throw CacheFormatError("cache entry has trailing bytes") }
        guard (100...599).contains(status) else { throw CacheFormatError("cache entry status \(status) invalid") }
        // Redis is outside the gateway: a time from before 1970 or after 9999 is not one it wrote.
        guard Self.validCreation.contains(created) else { throw CacheFormatError("cache entry time \(created) invalid") }
        guard let contentType = utf8(fields[0]), let model = utf8(fields[1]) else {
            throw CacheFormatError("cache entry text is not UTF-8")
        }
        // It becomes a response header as is: an entry written by anyone else must not add one.
        guard fields[0].allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
            throw CacheFormatError("cache entry content type is not printable ASCII")
        }
        return CachedAnswer(status: status, contentType: contentType, body: fields[2], createdMs: created, model: model)
    }

    /// Unix ms from 1970 to the end of year 9999.
    static let validCreation: ClosedRange<Int64> = 0...253_402_300_799_999

    /// The `Age` of an answer created at `createdMs`, in whole seconds, never negative and
    /// never trapping whatever the two times are.
    public static func ageSeconds(createdMs: Int64, nowMs: Int64) -> Int64 {
        let (age, overflow) = nowMs.subtractingReportingOverflow(createdMs)
        if overflow { return 0 }
        return max(0, age / 1000)
    }

    private static func append(_ value: UInt64, bytes: Int, to out: inout [UInt8]) {
        for k in stride(from: bytes - 1, through: 0, by: -1) {
            out.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(k))))
        }
    }

    /// Big-endian; the caller has checked the bounds.
    private static func read(_ bytes: [UInt8], at i: Int, count: Int) -> UInt64 {
        var v: UInt64 = 0
        for k in 0..<count { v = v << 8 | UInt64(bytes[i + k]) }
        return v
    }

    private static func utf8(_ bytes: [UInt8]) -> String? {
        let s = String(decoding: bytes, as: UTF8.self)
        return s.utf8.elementsEqual(bytes) ? s : nil
    }
}

/// CRC-32 (IEEE 802.3, as zlib), to detect a corrupt entry.
private enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    /// Runs over contiguous memory without bounds checks: it covers every cache hit's whole
    /// entry (it was ~2% of a hit's CPU over a generic collection).
    static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        if let crc = bytes.withContiguousStorageIfAvailable({ checksum(buffer: $0) }) { return crc }
        return Array(bytes).withUnsafeBufferPointer { checksum(buffer: $0) }
    }

    private static func checksum(buffer: UnsafeBufferPointer<UInt8>) -> UInt32 {
        table.withUnsafeBufferPointer { table in
            var crc: UInt32 = 0xFFFF_FFFF
            for byte in buffer { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
            return crc ^ 0xFFFF_FFFF
        }
    }
}
