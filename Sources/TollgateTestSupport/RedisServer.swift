import Foundation
import XCTest

/// A private `redis-server` on a free loopback port, for one test. Killed by `stop()` (and in `deinit`).
///
/// When `redis-server` is missing the test is skipped — unless `TOLLGATE_TEST_STRICT=1`
/// (set by scripts/test, which installs it), where that is a failure.
public final class RedisServer: @unchecked Sendable {
    public let port: Int
    public let password: String?
    private let extraArguments: [String]
    private var process: Process?

    /// Starts `redis-server` and waits until it accepts connections.
    public init(password: String? = nil, extraArguments: [String] = []) throws {
        self.port = try Self.freePort()
        self.password = password
        self.extraArguments = extraArguments
        try start()
    }

    deinit {
        stop()
    }

    /// `redis://[:password@]127.0.0.1:port[/db]`
    public func url(database: Int? = nil, password: String? = nil) -> String {
        var url = "redis://"
        if let password = password ?? self.password { url += ":\(password)@" }
        url += "127.0.0.1:\(port)"
        if let database { url += "/\(database)" }
        return url
    }

    /// Starts the server (again) on the same port.
    public func start() throws {
        precondition(process == nil, "already running")
        var arguments = [
            "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--enable-debug-command", "local",
        ]
        if let password { arguments += ["--requirepass", password] }
        arguments += extraArguments
        let process = Process()
        process.executableURL = try Self.executable("redis-server")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        try waitUntilListening()
    }

    /// Kills the server at once (SIGKILL, as a crash) and waits for it to exit.
    public func stop() {
        guard let process else { return }
        self.process = nil
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
    }

    private func waitUntilListening() throws {
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            close(fd)
            if connected { return }
            usleep(10_000)
        }
        throw unavailable("redis-server did not start on port \(port)")
    }

    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else { throw unavailable("no free loopback port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func executable(_ name: String) throws -> URL {
        let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/usr/local/bin").split(separator: ":")
        for directory in paths {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return URL(fileURLWithPath: candidate) }
        }
        throw unavailable("\(name) is not installed")
    }
}

/// A skip, or under `TOLLGATE_TEST_STRICT=1` a failure.
func unavailable(_ reason: String) -> any Error {
    if ProcessInfo.processInfo.environment["TOLLGATE_TEST_STRICT"] == "1" {
        return TestEnvironmentError(reason: reason)
    }
    return XCTSkip(reason)
}

public struct TestEnvironmentError: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { "test environment: \(reason) (scripts/test installs what the tests need)" }
}
