import TollgateCore
import XCTest

final class CachePolicyTests: XCTestCase {
    private let none = CacheDirectives()

    func testDefaults() {
        let policy = CachePolicy()
        XCTAssertEqual(policy.mode, .deterministic)
        XCTAssertEqual(policy.ttl, .seconds(3600))
        XCTAssertEqual(policy.maxEntryBytes, 262_144)
        XCTAssertFalse(policy.shared)
        XCTAssertEqual(policy.namespace(department: "eng"), "department:eng")
        XCTAssertEqual(CachePolicy(shared: true).namespace(department: "eng"), "shared")
        XCTAssertEqual(CacheMode(rawValue: "always"), .always)
    }

    func testDeterministicMode() {
        let policy = CachePolicy(mode: .deterministic)
        func decide(_ t: Double?, seed: Bool = false) -> CacheDecision {
            CachePolicy.decide(policy: policy, temperature: t, hasSeed: seed, directives: none)
        }
        XCTAssertEqual(decide(0), CacheDecision(lookup: true, store: true, reason: "temperature 0"))
        XCTAssertEqual(decide(0.0).lookup, true)
        XCTAssertEqual(decide(-0.0).lookup, true)
        XCTAssertEqual(decide(0.7), CacheDecision(lookup: false, store: false, reason: "not deterministic"))
        XCTAssertEqual(decide(nil), CacheDecision(lookup: false, store: false, reason: "not deterministic"))
        XCTAssertEqual(decide(0.7, seed: true), CacheDecision(lookup: true, store: true, reason: "seed"))
        XCTAssertEqual(decide(nil, seed: true).store, true)
    }

    func testModes() {
        for t in [nil, 0, 0.7, 2] as [Double?] {
            let off = CachePolicy(mode: .off).decide(temperature: t, hasSeed: true, directives: none)
            XCTAssertEqual(off, CacheDecision(lookup: false, store: false, reason: "cache off"))
            let always = CachePolicy(mode: .always).decide(temperature: t, hasSeed: false, directives: none)
            XCTAssertEqual(always, CacheDecision(lookup: true, store: true, reason: "mode always"))
        }
    }

    func testDirectives() {
        XCTAssertEqual(CacheDirectives(cacheControl: nil), CacheDirectives())
        XCTAssertEqual(CacheDirectives(cacheControl: ""), CacheDirectives())
        XCTAssertEqual(CacheDirectives(cacheControl: "no-cache"), CacheDirectives(noCache: true))
        XCTAssertEqual(CacheDirectives(cacheControl: "no-store"), CacheDirectives(noStore: true))
        XCTAssertEqual(CacheDirectives(cacheControl: "No-Cache, max-age=0"), CacheDirectives(noCache: true))
        XCTAssertEqual(CacheDirectives(cacheControl: " max-age=0 ,\tNO-STORE ,no-cache=\"x\""), CacheDirectives(noCache: true, noStore: true))
        XCTAssertEqual(CacheDirectives(cacheControl: "max-age=0, private, no-transform"), CacheDirectives())
        XCTAssertEqual(CacheDirectives(cacheControl: "no-cacheX, xno-store"), CacheDirectives())

        let policy = CachePolicy()
        let noCache = policy.decide(temperature: 0, hasSeed: false, directives: CacheDirectives(cacheControl: "No-Cache, max-age=0"))
        XCTAssertEqual(noCache, CacheDecision(lookup: false, store: true, reason: "temperature 0, no-cache"))
        let noStore = policy.decide(temperature: 0, hasSeed: false, directives: CacheDirectives(cacheControl: "no-store"))
        XCTAssertEqual(noStore, CacheDecision(lookup: true, store: false, reason: "temperature 0, no-store"))
        let both = policy.decide(temperature: 0, hasSeed: false, directives: CacheDirectives(noCache: true, noStore: true))
        XCTAssertEqual([both.lookup, both.store], [false, false])
        // Directives never make an uncacheable request cacheable.
        XCTAssertEqual(policy.decide(temperature: 1, hasSeed: false, directives: CacheDirectives(noCache: true)).store, false)
    }

    func testAdmits() {
        let policy = CachePolicy(maxEntryBytes: 100)
        XCTAssertTrue(policy.admits(status: 200, bodyBytes: 100))
        XCTAssertFalse(policy.admits(status: 200, bodyBytes: 101))
        XCTAssertFalse(policy.admits(status: 200, bodyBytes: 0))
        XCTAssertFalse(policy.admits(status: 500, bodyBytes: 10))
        XCTAssertFalse(policy.admits(status: 429, bodyBytes: 10))
    }
}
