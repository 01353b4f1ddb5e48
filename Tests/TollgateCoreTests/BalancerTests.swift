import TollgateCore
import XCTest

final class SmoothWeightedRoundRobinTests: XCTestCase {
    func testNginxSequenceForWeights511() {
        var b = SmoothWeightedRoundRobin(weights: [5, 1, 1])
        let names = ["a", "b", "c"]
        let picks = (0..<14).map { _ in names[b.select { _ in true }!] }
        // nginx's documented sequence, twice over: { a, a, b, a, c, a, a }.
        XCTAssertEqual(picks, ["a", "a", "b", "a", "c", "a", "a", "a", "a", "b", "a", "c", "a", "a"])
    }

    func testEqualWeightsRotate() {
        var b = SmoothWeightedRoundRobin(weights: [1, 1, 1, 1])
        XCTAssertEqual((0..<8).map { _ in b.select { _ in true }! }, [0, 1, 2, 3, 0, 1, 2, 3])
    }

    func testUnavailableCandidatesAreSkippedAndTheRestKeepTheirRatio() {
        var b = SmoothWeightedRoundRobin(weights: [2, 1, 1])
        var counts = [0, 0, 0]
        for _ in 0..<300 { counts[b.select { $0 != 1 }!] += 1 }
        XCTAssertEqual(counts, [200, 0, 100])
    }

    func testNoneAvailable() {
        var b = SmoothWeightedRoundRobin(weights: [1, 1])
        XCTAssertNil(b.select { _ in false })
        var zero = SmoothWeightedRoundRobin(weights: [0, 0])
        XCTAssertNil(zero.select { _ in true })
    }
}

final class WeightedLeastInFlightTests: XCTestCase {
    func testIdleInstancesGetTheirWeights() {
        var b = WeightedLeastInFlight(weights: [3, 1])
        var counts = [0, 0]
        for _ in 0..<4000 { counts[b.select(isAvailable: { _ in true }, inFlight: { _ in 0 })!] += 1 }
        XCTAssertEqual(counts, [3000, 1000])
    }

    func testBusyInstanceReceivesLess() {
        var b = WeightedLeastInFlight(weights: [1, 1])
        var counts = [0, 0]
        // Instance 0 has three requests in flight: effective weights 1/4 and 1 -> 20% / 80%.
        for _ in 0..<1000 { counts[b.select(isAvailable: { _ in true }, inFlight: { $0 == 0 ? 3 : 0 })!] += 1 }
        XCTAssertEqual(Double(counts[0]) / 1000, 0.2, accuracy: 0.01)
        XCTAssertEqual(Double(counts[1]) / 1000, 0.8, accuracy: 0.01)
    }

    func testLoadFollowsInFlightCounts() {
        // Requests that never finish: the balancer keeps the in-flight counts level.
        var b = WeightedLeastInFlight(weights: [1, 1, 1])
        var inFlight = [0, 0, 0]
        for _ in 0..<300 {
            let i = b.select(isAvailable: { _ in true }, inFlight: { inFlight[$0] })!
            inFlight[i] += 1
        }
        XCTAssertLessThanOrEqual(inFlight.max()! - inFlight.min()!, 2)
    }

    func testSkipsUnavailable() {
        var b = WeightedLeastInFlight(weights: [1, 1])
        for _ in 0..<10 { XCTAssertEqual(b.select(isAvailable: { $0 == 1 }, inFlight: { _ in 0 }), 1) }
        XCTAssertNil(b.select(isAvailable: { _ in false }, inFlight: { _ in 0 }))
    }
}
