import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
@testable import TollgateRedis
import TollgateTestSupport
import XCTest

/// The pub/sub connection against a real Redis: messages arrive, a restarted Redis is
/// subscribed to again (and the owner told, to read what it missed), pushes are bounded.
final class RedisSubscriberTests: XCTestCase {
    private final class Inbox: Sendable {
        let messages = NIOLockedValueBox<[String]>([])
        let subscriptions = NIOLockedValueBox(0)
    }

    private func subscribe(url: String, client: TestClient, inbox: Inbox) async throws -> NIOLoopBoundBox<RedisSubscriber?> {
        let configuration = try RedisConfiguration(url: url)
        let loop = client.loop
        let box = NIOLoopBoundBox.makeEmptyBox(valueType: RedisSubscriber.self, eventLoop: loop)
        try await loop.submit {
            let s = RedisSubscriber(configuration: configuration, channels: ["a", "b"], eventLoop: loop, logger: Logger(label: "test"),
                                    keepAlive: .milliseconds(200),
                                    onSubscribed: { inbox.subscriptions.withLockedValue { $0 += 1 } },
                                    onMessage: { channel, payload in
                                        inbox.messages.withLockedValue { $0.append("\(channel):\(String(decoding: payload, as: UTF8.self))") }
                                    })
            box.value = s
            s.start()
        }.get()
        return box
    }

    private func until(_ condition: () -> Bool) async -> Bool {
        for _ in 0..<300 {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition()
    }

    func testMessagesArriveAndARestartedRedisIsSubscribedAgain() async throws {
        let server = try RedisServer(password: "pw")
        defer { server.stop() }
        let client = TestClient(try RedisConfiguration(url: server.url()))
        let inbox = Inbox()
        let box = try await subscribe(url: server.url(), client: client, inbox: inbox)
        var subscribed = await until { inbox.subscriptions.withLockedValue { $0 } == 1 }
        XCTAssertTrue(subscribed, "AUTH, then both channels confirmed")
        _ = try await client.waitUntilAvailable()
        _ = try await client.send("PUBLISH", "a", "one")
        _ = try await client.send("PUBLISH", "c", "not subscribed")
        _ = try await client.send("PUBLISH", "b", "two")
        var arrived = await until { inbox.messages.withLockedValue { $0 } == ["a:one", "b:two"] }
        XCTAssertTrue(arrived, "\(inbox.messages.withLockedValue { $0 })")
        // Keep-alive PINGs are answered in pub/sub mode and do not disturb it.
        try await Task.sleep(for: .milliseconds(500))
        let stillSubscribed = try await client.loop.submit { box.value?.isSubscribed ?? false }.get()
        XCTAssertTrue(stillSubscribed)

        server.stop()
        try server.start()
        subscribed = await until { inbox.subscriptions.withLockedValue { $0 } == 2 }
        XCTAssertTrue(subscribed, "subscribed again after the restart, and the owner told")
        _ = try await client.waitUntilAvailable()
        _ = try await client.send("PUBLISH", "a", "three")
        arrived = await until { inbox.messages.withLockedValue { $0 }.last == "a:three" }
        XCTAssertTrue(arrived)
        try await client.loop.flatSubmit { box.value!.close() }.get()
        try await client.shutdown()
    }

    func testAWrongPasswordIsRetriedNotTrapped() async throws {
        let server = try RedisServer(password: "right")
        defer { server.stop() }
        let client = TestClient(try RedisConfiguration(url: server.url(password: "wrong")))
        let inbox = Inbox()
        let box = try await subscribe(url: server.url(password: "wrong"), client: client, inbox: inbox)
        try await Task.sleep(for: .milliseconds(300))
        XCTAssertEqual(inbox.subscriptions.withLockedValue { $0 }, 0)
        let subscribed = try await client.loop.submit { box.value?.isSubscribed ?? true }.get()
        XCTAssertFalse(subscribed)
        try await client.loop.flatSubmit { box.value!.close() }.get()
        try await client.shutdown()
    }
}
