import NIOCore
import TollgateRedis
import XCTest

final class RedisConfigurationTests: XCTestCase {
    func testDefaults() {
        let configuration = RedisConfiguration()
        XCTAssertEqual(configuration.host, "127.0.0.1")
        XCTAssertEqual(configuration.port, 6379)
        XCTAssertEqual(configuration.database, 0)
        XCTAssertNil(configuration.password)
        XCTAssertNil(configuration.username)
        XCTAssertEqual(configuration.commandTimeout, .milliseconds(250))
        XCTAssertEqual(configuration.connectTimeout, .milliseconds(500))
        XCTAssertEqual(configuration.maxBackoff, .seconds(5))
    }

    func testParsesWellFormedURLs() throws {
        var configuration = try RedisConfiguration(url: "redis://localhost")
        XCTAssertEqual(configuration, RedisConfiguration(host: "localhost"))

        configuration = try RedisConfiguration(url: "redis://10.0.0.5:6380/2")
        XCTAssertEqual(configuration, RedisConfiguration(host: "10.0.0.5", port: 6380, database: 2))

        configuration = try RedisConfiguration(url: "redis://:s3cret@cache.internal:1234/3")
        XCTAssertEqual(configuration, RedisConfiguration(host: "cache.internal", port: 1234, password: "s3cret", database: 3))

        configuration = try RedisConfiguration(url: "redis://gateway:p%40ss%3Aw0rd@cache/")
        XCTAssertEqual(configuration.username, "gateway")
        XCTAssertEqual(configuration.password, "p@ss:w0rd")
        XCTAssertEqual(configuration.database, 0)

        configuration = try RedisConfiguration(url: "redis://:pa@ss@host")
        XCTAssertEqual(configuration.password, "pa@ss")
        XCTAssertEqual(configuration.host, "host")

        configuration = try RedisConfiguration(url: "redis://[::1]:6390/1")
        XCTAssertEqual(configuration, RedisConfiguration(host: "::1", port: 6390, database: 1))

        configuration = try RedisConfiguration(url: "REDIS://[::1]")
        XCTAssertEqual(configuration, RedisConfiguration(host: "::1"))
    }

    func testRejectsMalformedURLsWithAReason() {
        let malformed = [
            "",
            "localhost:6379",
            "http://localhost",
            "rediss://localhost",
            "redis://",
            "redis://:6379",
            "redis://host:",
            "redis://host:0",
            "redis://host:65536",
            "redis://host:+80",
            "redis://host:port",
            "redis://host/db",
            "redis://host/-1",
            "redis://host/1/2",
            "redis://user@host",
            "redis://user:@host",
            "redis://host?db=1",
            "redis://host#x",
            "redis://[::1",
            "redis://[::1]x",
            "redis://:p%zz@host",
            "redis://:p%4@host",
        ]
        for url in malformed {
            XCTAssertThrowsError(try RedisConfiguration(url: url), url) { error in
                guard let error = error as? RedisError else { return XCTFail("\(url): \(error)") }
                XCTAssertEqual(error.kind, .badURL, url)
                XCTAssertFalse(error.message.isEmpty, url)
            }
        }
    }

    /// A malformed URL ends up in an error message, and from there in a log or on a
    /// terminal: no part of its password may be in it, wherever the mistake is.
    func testMalformedURLErrorsNeverEchoThePassword() {
        let secret = "s3cr3tPW"
        let malformed = [
            "redis:/:\(secret)@host",             // no "//": the whole text used to be echoed
            "redis//:\(secret)@host",
            "redis://:\(secret)@",                // no host: "missing host in Redis URL '<url>'"
            "redis://user:\(secret)/0",           // "@" forgotten: the password parsed as the port
            "redis://user:\(secret)",
            "redis://:pa/\(secret)@host",          // "/" in the password: the rest parsed as the database
            "redis://:\(secret)@host:port",
            "redis://:\(secret)@[::1",
            "redis://:\(secret)@[::1]x",
            "redis://:\(secret)@host?x",
            "redis://:\(secret)%zz@host",
            "http://:\(secret)@host",
            "redis://\(secret)@host",
        ]
        for url in malformed {
            XCTAssertThrowsError(try RedisConfiguration(url: url), url) { error in
                XCTAssertFalse("\(error)".contains(secret), "\(url) → \(error)")
                XCTAssertFalse("\(error)".contains("3cr3t"), "\(url) → \(error)")
            }
        }
    }

    func testDescriptionHidesThePassword() throws {
        let configuration = try RedisConfiguration(url: "redis://gateway:s3cr3t@cache:6380/2")
        XCTAssertEqual("\(configuration)", "redis://***@cache:6380/2")
        XCTAssertFalse(String(reflecting: configuration).contains("s3cr3t"))
        XCTAssertEqual("\(RedisConfiguration(host: "::1"))", "redis://[::1]:6379/0")
    }

    func testRedactedURLHidesUserInformation() {
        XCTAssertEqual(RedisConfiguration.redacted("redis://:s3cr3t@cache:6379/0"), "redis://***@cache:6379/0")
        XCTAssertEqual(RedisConfiguration.redacted("redis://gateway:p@ss@cache"), "redis://***@cache")
        XCTAssertEqual(RedisConfiguration.redacted("redis://cache:6379"), "redis://cache:6379")
        XCTAssertEqual(RedisConfiguration.redacted("redis:/:s3cr3t@cache"), "***")
        XCTAssertEqual(RedisConfiguration.redacted("redis://user:s3cr3t/0"), "redis://***")
    }

    func testErrorsCompareByKindAndMessage() {
        XCTAssertEqual(RedisError.server("ERR x"), .server("ERR x"))
        XCTAssertNotEqual(RedisError.server("ERR x"), .server("ERR y"))
        XCTAssertNotEqual(RedisError.unavailable, .closed)
        XCTAssertEqual(RedisError.timeout.kind, .timeout)
        XCTAssertTrue(RedisError.server("ERR unknown").description.contains("ERR unknown"))
    }
}
