#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// An instance that misbehaves on purpose, for hostile-peer tests: a blocking TCP server on a
/// loopback port whose answers are whatever bytes a script returns — extra bytes past a length,
/// a 101, a head of a megabyte, a stream cut mid-chunk. Each connection runs on its own thread;
/// requests are read by their `content-length`.
public final class ScriptedUpstream: @unchecked Sendable {
    /// What to send back for one request, and whether to close the connection after it.
    public struct Reply: Sendable {
        public var bytes: [UInt8]
        public var close: Bool
        public var delay: Duration
        public init(_ text: String, close: Bool = false, delay: Duration = .zero) {
            self.bytes = Array(text.utf8)
            self.close = close
            self.delay = delay
        }
        public init(bytes: [UInt8], close: Bool = false) {
            self.bytes = bytes
            self.close = close
            self.delay = .zero
        }

        /// A well-formed JSON answer.
        public static func json(_ body: String, extraHeaders: String = "") -> Reply {
            Reply("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n\(extraHeaders)\r\n\(body)")
        }
    }

    /// A request as received: its head text and body.
    public struct Request: Sendable {
        public var head: String
        public var body: String
        /// The number of this request on its connection, from 0.
        public var onConnection: Int
        /// The connection it came on, numbered from 0 in the order they were accepted.
        public var connection: Int = 0
        public var path: String { head.split(separator: " ").dropFirst().first.map(String.init) ?? "" }
    }

    public let port: Int
    private let listener: Int32
    private let script: @Sendable (Request) -> Reply
    private let lock = NSLock()
    private var _requests: [Request] = []
    private var _connections = 0
    private var _open = 0
    private var stopped = false

    public init(script: @escaping @Sendable (Request) -> Reply) throws {
        self.script = script
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 128) == 0 else {
            Glibc.close(fd)
            throw RawSocket.Failure("bind/listen failed")
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    /// Requests received so far (health probes included), in order.
    public var requests: [Request] { lock.withLock { _requests } }
    /// Connections accepted so far.
    public var connections: Int { lock.withLock { _connections } }
    /// Connections accepted and not yet closed (by either side).
    public var openConnections: Int { lock.withLock { _open } }

    public func stop() {
        lock.withLock { stopped = true }
        shutdown(listener, Int32(SHUT_RDWR))
        Glibc.close(listener)
    }

    private func acceptLoop() {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { return }
            if lock.withLock({ stopped }) {
                Glibc.close(fd)
                return
            }
            let number = lock.withLock {
                _connections += 1
                _open += 1
                return _connections - 1
            }
            let thread = Thread { [self] in serve(fd, number: number) }
            thread.start()
        }
    }

    private func serve(_ fd: Int32, number: Int) {
        defer {
            Glibc.close(fd)
            lock.withLock { _open -= 1 }
        }
        var buffer: [UInt8] = []
        var index = 0
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            // A head, then its content-length body.
            var headEnd: Int?
            while headEnd == nil {
                if buffer.count >= 4 {
                    for i in 0...(buffer.count - 4) where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
                        headEnd = i
                        break
                    }
                }
                if headEnd != nil { break }
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return }
                buffer += chunk[0..<n]
            }
            let head = String(decoding: buffer[0..<headEnd!], as: UTF8.self)
            buffer.removeFirst(headEnd! + 4)
            var length = 0
            for line in head.components(separatedBy: "\r\n") where line.lowercased().hasPrefix("content-length:") {
                length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
            }
            while buffer.count < length {
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return }
                buffer += chunk[0..<n]
            }
            let body = String(decoding: buffer[0..<length], as: UTF8.self)
            buffer.removeFirst(length)
            var request = Request(head: head, body: body, onConnection: index)
            request.connection = number
            index += 1
            lock.withLock { _requests.append(request) }
            let reply = script(request)
            if reply.delay > .zero { Thread.sleep(forTimeInterval: Double(reply.delay.components.seconds) + Double(reply.delay.components.attoseconds) / 1e18) }
            var sent = 0
            while sent < reply.bytes.count {
                let n = reply.bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return }
                sent += n
            }
            if reply.close { return }
        }
    }
}
