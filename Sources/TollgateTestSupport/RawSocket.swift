#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A plain blocking TCP client for hostile-peer tests: it sends exactly the bytes it is given
/// and reads answers framed strictly by HTTP/1.1, so that a desynchronised connection shows
/// (an answer that declares a body and sends none, bytes left over, a close where a keep-alive
/// was due). Every read has a deadline; nothing here waits forever.
public final class RawSocket: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ text: String) { description = text }
    }

    /// One answer as read off the wire.
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]
        public var bodyText: String { String(decoding: body, as: UTF8.self) }
        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    private let fd: Int32
    /// Bytes received and not yet consumed by a parsed answer.
    private var pending: [UInt8] = []
    public private(set) var closedByPeer = false

    public init(port: Int, host: String = "127.0.0.1") throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket() failed") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr(host)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            Glibc.close(fd)
            throw Failure("connect to \(port) failed: errno \(errno)")
        }
    }

    deinit { Glibc.close(fd) }

    /// Sets the kernel's receive buffer (before much is read): small, for a client that never reads.
    public func setReceiveBuffer(_ bytes: Int) {
        var size = Int32(bytes)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    public func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure("send failed: errno \(errno)") }
            sent += n
        }
    }

    /// Sends without blocking; returns how many bytes the kernel took (0 when its buffers are full).
    public func trySend(_ bytes: [UInt8]) -> Int {
        let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        return max(0, n)
    }

    /// Reads what arrives within `timeout` (stops early at a close). Returns false on a close.
    @discardableResult
    private func fill(until deadline: ContinuousClock.Instant) throws -> Bool {
        let remaining = deadline - .now
        guard remaining > .zero else { throw Failure("timed out with \(pending.count) bytes pending: \(String(decoding: pending.prefix(300), as: UTF8.self))") }
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ms = Int32(max(1, remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000))
        let ready = poll(&pfd, 1, ms)
        guard ready > 0 else { throw Failure("timed out with \(pending.count) bytes pending: \(String(decoding: pending.prefix(300), as: UTF8.self))") }
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 {
            closedByPeer = true
            return false
        }
        pending += chunk[0..<n]
        return true
    }

    /// Reads one answer to a request made with `method` (a HEAD answer has no body whatever its
    /// headers say). Throws on a timeout, a close before the answer is complete, or bad framing.
    public func readResponse(method: String = "GET", timeout: Duration = .seconds(5)) throws -> Response {
        let deadline = ContinuousClock.now + timeout
        while true {
            // Skip interim 1xx answers (100 Continue).
            guard let end = headEnd() else {
                guard try fill(until: deadline) else { throw Failure("closed before a head; got: \(String(decoding: pending, as: UTF8.self))") }
                continue
            }
            let head = String(decoding: pending[0..<end], as: UTF8.self)
            var lines = head.components(separatedBy: "\r\n")
            let statusLine = lines.removeFirst()
            let parts = statusLine.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, parts[0] == "HTTP/1.1", let status = Int(parts[1]) else {
                throw Failure("not a status line: \(statusLine)")
            }
            var headers: [(String, String)] = []
            for line in lines where !line.isEmpty {
                guard let colon = line.firstIndex(of: ":") else { throw Failure("bad header line: \(line)") }
                headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            }
            pending.removeFirst(end + 4)
            if (100..<200).contains(status) { continue }
            var response = Response(status: status, headers: headers, body: [])
            let noBody = method == "HEAD" || status == 204 || status == 304
            if noBody { return response }
            if let te = response.header("transfer-encoding") {
                guard te.lowercased() == "chunked" else { throw Failure("transfer-encoding \(te)") }
                response.body = try readChunked(deadline: deadline)
            } else if let cl = response.header("content-length") {
                guard let length = Int(cl), length >= 0 else { throw Failure("content-length \(cl)") }
                while pending.count < length {
                    guard try fill(until: deadline) else { throw Failure("closed after \(pending.count) of \(length) body bytes") }
                }
                response.body = Array(pending[0..<length])
                pending.removeFirst(length)
            } else {
                while try fill(until: deadline) {}
                response.body = pending
                pending = []
            }
            return response
        }
    }

    private func headEnd() -> Int? {
        guard pending.count >= 4 else { return nil }
        for i in 0...(pending.count - 4) where pending[i] == 13 && pending[i + 1] == 10 && pending[i + 2] == 13 && pending[i + 3] == 10 {
            return i
        }
        return nil
    }

    private func readChunked(deadline: ContinuousClock.Instant) throws -> [UInt8] {
        var body: [UInt8] = []
        while true {
            var lineEnd: Int?
            while lineEnd == nil {
                if pending.count >= 2 {
                    for i in 0..<(pending.count - 1) where pending[i] == 13 && pending[i + 1] == 10 { lineEnd = i; break }
                }
                if lineEnd == nil { guard try fill(until: deadline) else { throw Failure("closed inside a chunk size") } }
            }
            let sizeText = String(decoding: pending[0..<lineEnd!], as: UTF8.self)
            guard let size = Int(sizeText.split(separator: ";")[0], radix: 16) else { throw Failure("bad chunk size \(sizeText)") }
            pending.removeFirst(lineEnd! + 2)
            while pending.count < size + 2 {
                guard try fill(until: deadline) else { throw Failure("closed inside a chunk") }
            }
            guard pending[size] == 13, pending[size + 1] == 10 else { throw Failure("chunk not followed by CRLF") }
            if size == 0 {
                pending.removeFirst(2)
                return body
            }
            body += pending[0..<size]
            pending.removeFirst(size + 2)
        }
    }

    /// Whether the peer closes within `timeout` (bytes that arrive meanwhile are kept).
    public func closes(within timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            do {
                if try !fill(until: deadline) { return true }
            } catch {
                return closedByPeer
            }
        }
        return closedByPeer
    }

    /// Bytes received and not consumed by an answer: must be empty between answers.
    public var leftover: [UInt8] { pending }
}
