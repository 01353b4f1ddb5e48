import Foundation
import GRDB
import TollgateCore
import TollgateLedger
import XCTest

final class KeyStoreTests: LedgerTestCase {
    private let now = Date(timeIntervalSince1970: 1_793_491_200)

    func testCreateListAndOnlyTheHashIsStored() throws {
        let ledger = try openLedger()
        let store = KeyStore(database: ledger)
        let created = try store.create(department: "engineering", label: "ci", expiresIn: nil, now: now)
        let key = created.key

        XCTAssertTrue(key.hasPrefix("tg-"))
        XCTAssertEqual(key.count, 46)
        let base62 = Set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        XCTAssertTrue(key.dropFirst(3).allSatisfy(base62.contains))
        // 43 base62 characters carry log2(62) × 43 ≈ 256 bits, all from 32 random bytes.
        XCTAssertGreaterThanOrEqual(Double(key.count - 3) * log2(62), 128)
        XCTAssertEqual(created.info.prefix, String(key.prefix(11)))
        XCTAssertNotEqual(try store.create(department: "engineering", label: nil, expiresIn: nil).key, key)

        XCTAssertEqual(try store.list(department: "engineering").first, created.info)
        XCTAssertEqual(created.info.label, "ci")
        XCTAssertEqual(created.info.createdMs, 1_793_491_200_000)
        let active = try store.activeKeys(now: now)
        XCTAssertEqual(active.count, 2)
        let mine = active.first { $0.prefix == created.info.prefix }
        XCTAssertEqual(mine?.sha256, KeyDigest.hex(of: key))
        XCTAssertEqual(mine?.digest, KeyDigest(hashing: Array(key.utf8)))
        XCTAssertEqual(mine?.department, "engineering")

        try ledger.close()
        var bytes = Data()
        for suffix in ["", "-wal"] {
            if let data = FileManager.default.contents(atPath: path("ledger.sqlite") + suffix) { bytes.append(data) }
        }
        XCTAssertNil(bytes.range(of: Data(key.utf8)), "the key itself is stored nowhere")
        XCTAssertNil(bytes.range(of: Data(key.dropFirst(11).utf8)), "nor its secret part")
        XCTAssertNotNil(bytes.range(of: Data(KeyDigest.hex(of: key).utf8)), "its hash is")
    }

    func testRevoke() throws {
        let store = KeyStore(database: try openLedger())
        let created = try store.create(department: "analytics", label: nil, expiresIn: nil, now: now)
        let revoked = try store.revoke(prefix: created.info.prefix, now: now.addingTimeInterval(60))
        XCTAssertEqual(revoked.revokedMs, 1_793_491_260_000)
        XCTAssertEqual(revoked.state(atMs: 0), .revoked)
        XCTAssertEqual(try store.find(prefix: created.info.prefix), revoked)
        XCTAssertTrue(try store.activeKeys(now: now).isEmpty)
        XCTAssertEqual(ledgerError(try store.revoke(prefix: created.info.prefix))?.codeString, "key_already_revoked")
        XCTAssertEqual(ledgerError(try store.revoke(prefix: "tg-nothere0"))?.codeString, "key_not_found")
    }

    func testExpiry() throws {
        let store = KeyStore(database: try openLedger())
        let created = try store.create(department: "legal", label: nil, expiresIn: try KeyStore.parseDuration("12h"), now: now)
        XCTAssertEqual(created.info.expiresMs, 1_793_491_200_000 + 12 * 3_600_000)
        XCTAssertEqual(try store.activeKeys(now: now.addingTimeInterval(11 * 3600)).map(\.prefix), [created.info.prefix])
        XCTAssertEqual(try store.activeKeys(now: now.addingTimeInterval(11 * 3600)).first?.expiresMs, created.info.expiresMs)
        XCTAssertTrue(try store.activeKeys(now: now.addingTimeInterval(12 * 3600)).isEmpty)
        XCTAssertEqual(try store.list().first?.state(atMs: created.info.expiresMs!), .expired)
        XCTAssertEqual(ledgerError(try store.create(department: " ", label: nil, expiresIn: nil))?.codeString, "invalid_department")
    }

    func testLastUsed() throws {
        let store = KeyStore(database: try openLedger())
        let a = try store.create(department: "a", label: nil, expiresIn: nil, now: now).info.prefix
        let b = try store.create(department: "b", label: nil, expiresIn: nil, now: now).info.prefix
        try store.recordLastUsed([a: 2_000, b: 3_000, "tg-unknown00": 5])
        try store.recordLastUsed([a: 1_000])  // older: ignored
        XCTAssertEqual(try store.find(prefix: a)?.lastUsedMs, 2_000)
        XCTAssertEqual(try store.find(prefix: b)?.lastUsedMs, 3_000)
    }

    func testParseDuration() throws {
        XCTAssertEqual(try KeyStore.parseDuration("90d"), .seconds(90 * 86_400))
        XCTAssertEqual(try KeyStore.parseDuration("12h"), .seconds(12 * 3_600))
        XCTAssertEqual(try KeyStore.parseDuration("30m"), .seconds(30 * 60))
        XCTAssertEqual(try KeyStore.parseDuration("2w"), .seconds(14 * 86_400))
        for bad in ["", "d", "90", "-5d", "0h", "1.5h", "10y", "١٢h", "99999999999999999d"] {
            XCTAssertEqual(ledgerError(try KeyStore.parseDuration(bad))?.codeString, "invalid_duration", bad)
        }
    }
}
