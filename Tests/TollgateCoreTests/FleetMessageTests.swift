import TollgateCore
import XCTest

/// What replicas read from Redis is outside the gateway: parsed into bounded values or dropped.
final class FleetMessageTests: XCTestCase {
    func testEveryEventSurvivesTheWire() {
        let digest = String(repeating: "ab", count: 32)
        for event: FleetEvent in [.keysChanged, .reload, .purge(department: nil), .purge(department: "customer service"),
                                  .logout(sessionDigest: digest)] {
            let message = FleetMessage(origin: "1f2e-aa", event: event)
            XCTAssertEqual(FleetMessage.parse(Array(message.encoded.utf8)), message)
        }
    }

    func testMalformedMessagesAreRefused() {
        let bad = [
            "", "tg1", "tg1 origin", "tg2 origin keys", "tg1 origin keys extra", "tg1 origin reload now", "tg1 origin nuke",
            "tg1 or/gin keys", "tg1  keys", "tg1 \(String(repeating: "a", count: 65)) keys",
            "tg1 o logout abc", "tg1 o logout \(String(repeating: "AB", count: 32))", "tg1 o purge ",
            "tg1 o purge \(String(repeating: "d", count: 257))", "tg1 o purge a\nb", "tg1 o purge a\u{7F}",
        ]
        for text in bad { XCTAssertNil(FleetMessage.parse(Array(text.utf8)), text) }
        XCTAssertNil(FleetMessage.parse([0x74, 0x67, 0x31, 0x20, 0xFF, 0x20, 0x6B]), "not UTF-8")
        XCTAssertNil(FleetMessage.parse(Array(repeating: 0x61, count: 100_000)), "too long")
    }

    func testRegistryRecordsAreBounded() throws {
        let record = FleetKeyRecord(sha256: KeyDigest.hex(of: "tg-x"), prefix: "tg-AbCd1234", department: "support", label: "ci",
                                    createdMs: 1_700_000_000_000, expiresMs: nil, revokedMs: nil)
        XCTAssertEqual(FleetKeyRecord.parse(field: Array(record.prefix.utf8), value: record.encoded), record)
        XCTAssertNil(FleetKeyRecord.parse(field: Array("tg-other".utf8), value: record.encoded), "the field names the record")
        var wrong = record
        wrong.sha256 = "nothex"
        XCTAssertNil(FleetKeyRecord.parse(field: Array(wrong.prefix.utf8), value: wrong.encoded))
        wrong = record
        wrong.createdMs = -1
        XCTAssertNil(FleetKeyRecord.parse(field: Array(wrong.prefix.utf8), value: wrong.encoded))
        wrong = record
        wrong.revokedMs = Int64.max
        XCTAssertNil(FleetKeyRecord.parse(field: Array(wrong.prefix.utf8), value: wrong.encoded))
        XCTAssertNil(FleetKeyRecord.parse(field: Array(record.prefix.utf8), value: Array("{\"sha256\":1}".utf8)))
        XCTAssertNil(FleetKeyRecord.parse(field: Array(record.prefix.utf8), value: Array(repeating: 0x20, count: 5_000)))
    }

    func testTheRegistryPlanSpreadsKeysAndRevocationsBothWays() {
        func key(_ p: String, revoked: Int64? = nil, digestOf seed: String? = nil) -> FleetKeyRecord {
            FleetKeyRecord(sha256: KeyDigest.hex(of: seed ?? p), prefix: p, department: "d", label: nil, createdMs: 1, expiresMs: nil,
                           revokedMs: revoked)
        }
        let plan = KeyRegistryPlan(
            local: [key("a"), key("b"), key("c", revoked: 5), key("e"), key("f", digestOf: "other")],
            remote: [key("a"), key("b", revoked: 9), key("c"), key("d"), key("f")])
        XCTAssertEqual(plan.insertLocally, [key("d")])
        XCTAssertEqual(plan.revokeLocally.map(\.prefix), ["b"])
        XCTAssertEqual(plan.revokeLocally.map(\.revokedMs), [9])
        XCTAssertEqual(plan.publish, [key("c", revoked: 5), key("e")])
        XCTAssertEqual(plan.conflicts, ["f"])
        XCTAssertTrue(KeyRegistryPlan(local: [key("a")], remote: [key("a")]).isEmpty)
    }

    func testRollupsCountAndReadBack() {
        var c = RollupCounts()
        c.count(status: 200, cache: .hit, tokens: 10, latencyMs: 3)
        c.count(status: 200, cache: .miss, tokens: 20, latencyMs: 40)
        c.count(status: 500, cache: .off, tokens: 0, latencyMs: .infinity)
        XCTAssertEqual(c.requests, 3)
        XCTAssertEqual(c.errors, 1)
        XCTAssertEqual(c.hitRate, 0.5)
        var back = RollupCounts()
        for (name, value) in c.fields { XCTAssertTrue(back.add(field: Substring(name), value: value)) }
        XCTAssertEqual(back, c)
        XCTAssertFalse(back.add(field: "lat99", value: 1))
        XCTAssertFalse(back.add(field: "bogus", value: 1))
        XCTAssertTrue(back.add(field: "requests", value: -5), "negative values from Redis count as zero")
        XCTAssertEqual(back.requests, 3)
        XCTAssertEqual(c.percentileMs(0.5), 5, "3 ms, and the infinite latency counted as 0")
        XCTAssertEqual(c.percentileMs(0.95), 50)
        let cell = RollupCell(replica: "r1", department: "support", instance: "")
        let parsed = RollupCell.parse(field: Array(cell.field("hits").utf8))
        XCTAssertEqual(parsed?.0, cell)
        XCTAssertEqual(parsed?.1, "hits")
        XCTAssertNil(RollupCell.parse(field: Array("a\tb".utf8)))
    }
}
