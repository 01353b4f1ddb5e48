import Foundation
import TollgateCore
import TollgateLedger
import XCTest

/// A fresh temporary directory per test, removed afterwards.
class LedgerTestCase: XCTestCase {
    var directory: String!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("tollgate-ledger-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The repository's migrations/ directory.
    static let repositoryMigrations: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("migrations").path

    func path(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }

    /// A ledger with the repository's migrations applied.
    func openLedger(_ name: String = "ledger.sqlite") throws -> LedgerDatabase {
        try LedgerDatabase.open(path: path(name), migrations: MigrationLoader.load(directory: Self.repositoryMigrations))
    }

    /// Copies the repository's migrations into the test directory, to edit them.
    func copyMigrations() throws -> String {
        let copy = path("migrations")
        try FileManager.default.copyItem(atPath: Self.repositoryMigrations, toPath: copy)
        return copy
    }

    func write(_ text: String, to file: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: file))
    }

    /// The error a throwing expression raised, as a `LedgerError`.
    func ledgerError<T>(_ body: @autoclosure () throws -> T, file: StaticString = #filePath, line: UInt = #line) -> LedgerError? {
        do {
            _ = try body()
            XCTFail("expected a LedgerError", file: file, line: line)
            return nil
        } catch let error as LedgerError {
            return error
        } catch {
            XCTFail("expected a LedgerError, got \(error)", file: file, line: line)
            return nil
        }
    }
}

func record(
    _ timeMs: Int64, _ department: String, latency: Double = 10, status: Int = 200,
    cache: CacheOutcome = .miss, prompt: Int? = 10, completion: Int? = 5, reserved: Int? = nil,
    instance: String? = "qwen-0", preview: String? = nil, id: String = UUID().uuidString
) -> UsageRecord {
    UsageRecord(timeMs: timeMs, requestID: id, department: department, keyPrefix: "tg-AbCd1234",
                model: "qwen2.5-0.5b-instruct", endpoint: "chat", instance: instance, status: status,
                promptTokens: prompt, completionTokens: completion, latencyMs: latency, ttftMs: nil,
                cache: cache, stream: false, cacheKey: nil, promptPreview: preview,
                reservedTokens: reserved, replica: "r1")
}

/// Writes records through a real `UsageWriter` and waits for them.
func insert(_ records: [UsageRecord], into database: LedgerDatabase) async {
    let writer = UsageWriter(database: database)
    writer.submit(records)
    await writer.close()
}
