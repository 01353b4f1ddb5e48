import TollgateCore
import XCTest

/// The lease arithmetic (`QuotaLeasePolicy`, `QuotaLeaseState`), driven round by round.
final class QuotaLeaseTests: XCTestCase {
    func testTheSliceIsAShareOfTheLimitAndShrinksWithTheRemainder() {
        let policy = QuotaLeasePolicy(percent: 1)
        XCTAssertEqual(policy.slice(limit: 600), 6)
        XCTAssertEqual(policy.slice(limit: 50), 1, "at least one")
        XCTAssertEqual(policy.slice(limit: QuotaAmount.max), QuotaAmount.max / 100)
        XCTAssertEqual(QuotaLeasePolicy.grant(limit: 600, taken: 0, want: 6), 6)
        XCTAssertEqual(QuotaLeasePolicy.grant(limit: 600, taken: 570, want: 6), 3, "30 left: 30 / 8")
        XCTAssertEqual(QuotaLeasePolicy.grant(limit: 600, taken: 597, want: 6), 1)
        XCTAssertEqual(QuotaLeasePolicy.grant(limit: 600, taken: 600, want: 6), 0, "capped at what is left")
        XCTAssertEqual(QuotaLeasePolicy.grant(limit: 600, taken: 650, want: 6), 0)
        XCTAssertEqual(QuotaLeasePolicy.grant(limit: 600, taken: 0, want: 0), 0)
    }

    func testATakeWhenLowADebtWhenPastTheSlicesAndAGiveBackWhenIdle() {
        let policy = QuotaLeasePolicy(percent: 1)
        var s = QuotaLeaseState(window: 1)
        // A new window: four admitted on credit, charged with the first slice and held.
        XCTAssertEqual(s.decide(window: 1, used: 4, granted: 0, limit: 600, policy: policy, woken: true), .take(want: 6, debt: 4))
        XCTAssertEqual(s.took(granted: 6, debt: 4, wanted: 6, fold: true), 10)
        XCTAssertEqual(s.decide(window: 1, used: 5, granted: 10, limit: 600, policy: policy, woken: false), .none, "5 left, above low water 3")
        XCTAssertEqual(s.decide(window: 1, used: 7, granted: 10, limit: 600, policy: policy, woken: false), .take(want: 6, debt: 0))
        XCTAssertEqual(s.took(granted: 6, debt: 0, wanted: 6, fold: false), 6)
        // Racing reservations went 2 past what is held: charged once, not held.
        XCTAssertEqual(s.decide(window: 1, used: 18, granted: 16, limit: 600, policy: policy, woken: false), .take(want: 6, debt: 2))
        XCTAssertEqual(s.took(granted: 0, debt: 2, wanted: 6, fold: false), 0, "Redis has nothing left")
        XCTAssertEqual(s.charged, 2)
        // Nothing left: no asking for a while, no second charge of the same debt.
        XCTAssertEqual(s.decide(window: 1, used: 18, granted: 16, limit: 600, policy: policy, woken: true), .none)
        XCTAssertEqual(s.decide(window: 1, used: 19, granted: 16, limit: 600, policy: policy, woken: true), .take(want: 0, debt: 1))
        XCTAssertEqual(s.took(granted: 0, debt: 1, wanted: 0, fold: false), 0)
        // Settlements brought the use below what is held: the charge goes back.
        XCTAssertEqual(s.decide(window: 1, used: 15, granted: 16, limit: 600, policy: policy, woken: false), .take(want: 0, debt: -3))
        XCTAssertEqual(s.took(granted: 0, debt: -3, wanted: 0, fold: false), 0)
        XCTAssertEqual(s.charged, 0)
        // A token meter whose slice is smaller than one request asks for the request.
        var tokens = QuotaLeaseState(window: 4)
        XCTAssertEqual(tokens.decide(window: 4, used: 40, granted: 40, limit: 300, policy: policy, woken: true, wanted: 30),
                       .take(want: 30, debt: 0))
        // Idle: what is held past one slice goes back after ten quiet rounds; one slice stays,
        // so that the next request is admitted at once.
        var idle = QuotaLeaseState(window: 2)
        _ = idle.decide(window: 2, used: 2, granted: 20, limit: 600, policy: policy, woken: false)
        for _ in 0..<(QuotaLeasePolicy.idleRoundsBeforeGiveBack - 1) {
            XCTAssertEqual(idle.decide(window: 2, used: 2, granted: 20, limit: 600, policy: policy, woken: false), .none)
        }
        XCTAssertEqual(idle.decide(window: 2, used: 2, granted: 20, limit: 600, policy: policy, woken: false), .giveBack(amount: 12))
        XCTAssertEqual(idle.decide(window: 2, used: 2, granted: 8, limit: 600, policy: policy, woken: false), .none, "one slice kept")
        // A new window starts afresh.
        XCTAssertEqual(idle.decide(window: 3, used: 0, granted: 0, limit: 600, policy: policy, woken: true), .take(want: 6, debt: 0))
    }

    /// Three replicas admit as fast as they can against one shared counter, each round taking
    /// slices as `QuotaSync` does (the script's rule): the fleet never admits more than
    /// limit + replicas × slice, and not much less than the limit.
    func testThreeGreedyReplicasStayWithinLimitPlusReplicasTimesSlice() {
        let policy = QuotaLeasePolicy(percent: 1)
        let limit = 600
        var taken = 0
        var used = [0, 0, 0], granted = [0, 0, 0]
        var states = (0..<3).map { _ in QuotaLeaseState(window: 7) }
        for round in 0..<2_000 {
            for r in 0..<3 {
                // Admission: up to 5 requests per replica per round, against slices + credit.
                let cap = min(limit, granted[r] > 0 ? granted[r] : policy.credit(limit: limit))
                for _ in 0..<5 where used[r] < cap { used[r] += 1 }
                switch states[r].decide(window: 7, used: used[r], granted: granted[r], limit: limit, policy: policy, woken: true) {
                case .none: break
                case .take(let want, let debt):
                    taken += debt
                    let g = QuotaLeasePolicy.grant(limit: limit, taken: taken, want: want)
                    taken += g
                    granted[r] += states[r].took(granted: g, debt: debt, wanted: want, fold: granted[r] == 0)
                case .giveBack(let amount):
                    granted[r] -= amount
                    taken -= amount
                }
            }
            _ = round
        }
        let admitted = used.reduce(0, +)
        XCTAssertLessThanOrEqual(admitted, limit + 3 * policy.slice(limit: limit))
        XCTAssertGreaterThanOrEqual(admitted, limit)
    }
}

/// `quotas.lease` in the configuration: a percentage, bounded.
final class QuotaLeaseConfigurationTests: XCTestCase {
    private let pools = """
        pools:
          - {name: p, models: [m], instances: [{name: a, url: "http://127.0.0.1:9001"}]}
        """

    func testTheLeaseIsAPercentageOfEachLimit() throws {
        let config = try ConfigurationLoader.parse("quotas: {lease: 2.5%}\n" + pools, file: "test.yaml")
        XCTAssertEqual(config.quotas.lease.percent, 2.5)
        XCTAssertEqual(config.quotas.lease.slice(limit: 600), 15)
        XCTAssertEqual(try ConfigurationLoader.parse(pools, file: "test.yaml").quotas.lease.percent, 1, "default 1%")
    }

    func testALeaseOutOfRangeIsAnErrorNamingTheKey() {
        for bad in ["0%", "51%", "abc", "1e999%", "-1%", "nan%"] {
            do {
                _ = try ConfigurationLoader.parse("quotas: {lease: \"\(bad)\"}\n" + pools, file: "test.yaml")
                XCTFail("\(bad) accepted")
            } catch let e as ConfigurationErrors {
                XCTAssertEqual(e.errors.map(\.key), ["quotas.lease"], bad)
            } catch {
                XCTFail("\(error)")
            }
        }
    }
}
