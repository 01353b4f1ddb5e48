import Foundation
import XCTest
import Logging
import NIOCore
import NIOPosix
@testable import TollgateRedis

/// A `RedisClientGroup` over a private one-thread event loop group, driven from async tests.
final class TestClient: Sendable {
    let eventLoopGroup: MultiThreadedEventLoopGroup
    let loop: any EventLoop
    let group: RedisClientGroup

    init(_ configuration: RedisConfiguration, logger: Logger = Logger(label: "redis-test")) {
        eventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        loop = eventLoopGroup.next()
        group = RedisClientGroup(configuration: configuration, group: eventLoopGroup, logger: logger)
    }

    /// Runs `body` with the connection, on its loop.
    func withConnection<T: Sendable>(
        _ body: @escaping @Sendable (RedisConnection) -> EventLoopFuture<T>
    ) async throws -> T {
        let group = self.group
        let loop = self.loop
        return try await loop.flatSubmit { body(group.connection(for: loop)) }.get()
    }

    func send(_ arguments: String...) async throws -> RESPValue {
        try await withConnection { $0.send(command: arguments) }
    }

    func isAvailable() async throws -> Bool {
        let group = self.group
        let loop = self.loop
        return try await loop.submit { group.connection(for: loop).isAvailable }.get()
    }

    /// Polls `isAvailable` until true or `timeout`; returns whether it became available.
    @discardableResult
    func waitUntilAvailable(timeout: Duration = .seconds(3)) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await isAvailable() { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    func shutdown() async throws {
        await group.shutdown()
        try await eventLoopGroup.shutdownGracefully()
    }
}

/// Records log entries for assertions.
final class LogRecorder: @unchecked Sendable {
    struct Entry {
        let level: Logger.Level
        let message: String
        let metadata: Logger.Metadata
    }

    private let lock = NSLock()
    private var storage: [Entry] = []

    var entries: [Entry] {
        lock.lock()
        defer { lock.unlock() }
        return storage
    }

    func append(_ entry: Entry) {
        lock.lock()
        storage.append(entry)
        lock.unlock()
    }

    var logger: Logger {
        Logger(label: "redis-test") { _ in RecordingLogHandler(recorder: self) }
    }
}

struct RecordingLogHandler: LogHandler {
    let recorder: LogRecorder
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        recorder.append(.init(
            level: event.level,
            message: event.message.description,
            metadata: metadata.merging(event.metadata ?? [:]) { $1 }
        ))
    }
}

/// Asserts that `body` throws a `RedisError` of `kind`; returns it.
@discardableResult
func assertRedisError<T>(
    _ kind: RedisError.Kind,
    file: StaticString = #filePath,
    line: UInt = #line,
    _ body: () async throws -> T
) async -> RedisError? {
    do {
        let value = try await body()
        XCTFail("expected RedisError.\(kind), got \(value)", file: file, line: line)
        return nil
    } catch let error as RedisError {
        XCTAssertEqual(error.kind, kind, "\(error)", file: file, line: line)
        return error
    } catch {
        XCTFail("expected RedisError.\(kind), got \(error)", file: file, line: line)
        return nil
    }
}

/// How one command ended, as a Sendable value.
enum Outcome: Sendable, Equatable {
    case value(RESPValue)
    case failure(RedisError)
    case other(String)

    var error: RedisError? {
        if case .failure(let error) = self { return error }
        return nil
    }

    /// Every future's outcome, in order, once all have completed.
    static func all(_ futures: [EventLoopFuture<RESPValue>], on loop: any EventLoop) -> EventLoopFuture<[Outcome]> {
        EventLoopFuture.whenAllComplete(futures, on: loop).map { results in
            results.map { result in
                switch result {
                case .success(let value): return .value(value)
                case .failure(let error as RedisError): return .failure(error)
                case .failure(let error): return .other("\(error)")
                }
            }
        }
    }
}
