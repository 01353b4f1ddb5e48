// The only file that imports CHiredis. hiredis' pure parts are used: `redisFormatCommandArgv`
// (encoding) and `redisReader` (parsing). Neither does I/O, so both may run on an event loop.
// No hiredis pointer leaves this file; replies are copied into `RESPValue`s before they are freed.

import CHiredis
import NIOCore

/// Maps a hiredis error code (`redisReader.err`, `REDIS_ERR_*`) and its message to a `RedisError`.
func redisError(hiredisCode code: Int32, message: String) -> RedisError {
    let detail = message.isEmpty ? "no detail" : message
    switch code {
    case REDIS_ERR_PROTOCOL:
        return .protocolError("malformed reply: \(detail)")
    case REDIS_ERR_OOM:
        return .protocolError("hiredis is out of memory: \(detail)")
    case REDIS_ERR_IO:
        return .protocolError("hiredis I/O error: \(detail)")
    case REDIS_ERR_EOF:
        return .protocolError("hiredis end of file: \(detail)")
    default:
        return .protocolError("hiredis error \(code): \(detail)")
    }
}

/// Encodes commands as RESP arrays of bulk strings with `redisFormatCommandArgv`.
///
/// Binary-safe: every argument is passed with its length. Keeps its scratch storage between
/// calls, so one encoder per connection encodes without allocating in the steady state.
struct RESPEncoder {
    private var scratch: [UInt8] = []
    private var lengths: [Int] = []

    init() {}

    /// Appends the RESP encoding of `arguments` to `out`.
    mutating func encode(_ arguments: [ByteBuffer], into out: inout ByteBuffer) throws {
        reset()
        for argument in arguments {
            scratch.append(contentsOf: argument.readableBytesView)
            lengths.append(argument.readableBytes)
        }
        try format(into: &out)
    }

    /// Appends the RESP encoding of `arguments` to `out`.
    mutating func encode(_ arguments: [[UInt8]], into out: inout ByteBuffer) throws {
        reset()
        for argument in arguments {
            scratch.append(contentsOf: argument)
            lengths.append(argument.count)
        }
        try format(into: &out)
    }

    /// Appends the RESP encoding of `arguments` (as UTF-8) to `out`.
    mutating func encode(_ arguments: [String], into out: inout ByteBuffer) throws {
        reset()
        for argument in arguments {
            let before = scratch.count
            scratch.append(contentsOf: argument.utf8)
            lengths.append(scratch.count - before)
        }
        try format(into: &out)
    }

    private mutating func reset() {
        scratch.removeAll(keepingCapacity: true)
        lengths.removeAll(keepingCapacity: true)
    }

    private mutating func format(into out: inout ByteBuffer) throws {
        guard !lengths.isEmpty else {
            throw RedisError.protocolError("a command needs at least one argument")
        }
        guard lengths.count <= Int(Int32.max) else {
            throw RedisError.protocolError("too many arguments")
        }
        // A byte past the end keeps the base address non-nil even when every argument is empty.
        scratch.append(0)
        defer { scratch.removeLast() }
        let count = lengths.count
        try scratch.withUnsafeBufferPointer { bytes in
            try lengths.withUnsafeBufferPointer { lengths in
                try withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: count) { argv in
                    let base = UnsafeRawPointer(bytes.baseAddress!)
                    var offset = 0
                    for index in 0..<count {
                        argv[index] = (base + offset).assumingMemoryBound(to: CChar.self)
                        offset += lengths[index]
                    }
                    var target: UnsafeMutablePointer<CChar>?
                    let length = redisFormatCommandArgv(&target, Int32(count), argv.baseAddress, lengths.baseAddress)
                    guard length >= 0, let target else {
                        throw redisError(hiredisCode: REDIS_ERR_OOM, message: "redisFormatCommandArgv failed")
                    }
                    defer { redisFreeCommand(target) }
                    out.writeBytes(UnsafeRawBufferPointer(start: target, count: Int(length)))
                }
            }
        }
    }
}

/// Parses RESP replies incrementally with a hiredis `redisReader`.
///
/// Owns the reader and frees it in `deinit`. Not thread-safe: used by one channel handler,
/// on its event loop. After it has thrown once the stream is unusable (hiredis keeps the error).
final class RESPReader {
    /// The most elements an array reply may declare. hiredis allocates an array's element
    /// pointers when it reads the count, before any element arrives: `*2144783648` asked for
    /// 17 GB (found by fuzzing). hiredis 1.x has `maxelements` for this; 0.14 (Debian's) has not,
    /// so the reader's `createArray` is wrapped. The gateway's replies are a few elements long.
    static let maxArrayElements = 1 << 20

    private let reader: UnsafeMutablePointer<redisReader>

    init() {
        guard let reader = redisReaderCreateWithFunctions(boundedReplyFunctions) else {
            // Only on malloc failure, as anywhere else in the process.
            fatalError("redisReaderCreate failed: out of memory")
        }
        self.reader = reader
    }

    deinit {
        redisReaderFree(reader)
    }

    /// Appends received bytes to the reader's buffer (hiredis copies them).
    func feed(_ buffer: ByteBuffer) throws {
        let status = buffer.withUnsafeReadableBytes { bytes -> Int32 in
            guard let base = bytes.baseAddress, bytes.count > 0 else { return REDIS_OK }
            return redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        if status != REDIS_OK { throw currentError() }
    }

    /// The next complete reply, or `nil` when more bytes are needed.
    func next() throws -> RESPValue? {
        var reply: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &reply) == REDIS_OK else {
            throw currentError()
        }
        guard let reply else { return nil }
        defer { freeReplyObject(reply) }
        return Self.value(of: reply.assumingMemoryBound(to: redisReply.self))
    }

    private func currentError() -> RedisError {
        var message = withUnsafeBytes(of: reader.pointee.errstr) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return String(decoding: bytes, as: UTF8.self)
        }
        if reader.pointee.err == REDIS_ERR_OOM {
            message += " (or an array reply over \(Self.maxArrayElements) elements)"
        }
        return redisError(hiredisCode: reader.pointee.err, message: message)
    }

    /// Copies a hiredis reply (recursively) into a Swift value.
    private static func value(of reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            return .bulkString(bytes(r.str, r.len))
        case REDIS_REPLY_STATUS:
            return .simpleString(String(decoding: bytes(r.str, r.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: bytes(r.str, r.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(r.integer))
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_ARRAY:
            var elements: [RESPValue] = []
            elements.reserveCapacity(r.elements)
            for index in 0..<r.elements {
                if let element = r.element[index] {
                    elements.append(value(of: element))
                } else {
                    elements.append(.null)
                }
            }
            return .array(elements)
        default:
            return .error("unknown hiredis reply type \(r.type)")
        }
    }

    private static func bytes(_ pointer: UnsafeMutablePointer<CChar>?, _ count: Int) -> [UInt8] {
        guard let pointer, count > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }
}

/// hiredis' default reply functions, with `createArray` refusing counts over
/// `RESPReader.maxArrayElements` (hiredis then fails the reply as out of memory). Built once
/// from a reader's defaults and never changed; hiredis only reads it.
nonisolated(unsafe) private let boundedReplyFunctions: UnsafeMutablePointer<redisReplyObjectFunctions> = {
    let functions = UnsafeMutablePointer<redisReplyObjectFunctions>.allocate(capacity: 1)
    functions.initialize(to: defaultReplyFunctions)
    functions.pointee.createArray = { task, elements in
        guard Int(elements) <= RESPReader.maxArrayElements else { return nil }
        return defaultReplyFunctions.createArray?(task, elements)
    }
    return functions
}()

/// hiredis' own reply functions (`defaultFunctions` in hiredis.c, reachable only through a reader).
private let defaultReplyFunctions: redisReplyObjectFunctions = {
    guard let probe = redisReaderCreate() else { fatalError("redisReaderCreate failed: out of memory") }
    defer { redisReaderFree(probe) }
    return probe.pointee.fn.pointee
}()
