import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateDataPlane
import TollgateSimulator
import TollgateTestSupport
import XCTest

final class FailoverTests: XCTestCase {
    /// An instance dies in the middle of 500 requests: no client sees an error, and once it
    /// is back, the probes bring it back into rotation.
    func testInstanceKilledDuringLoadCostsNoClientErrorAndIsUsedAgainWhenBack() async throws {
        var sim = SimulatorConfiguration()
        sim.timeToFirstToken = .milliseconds(5)
        let gw = try await GatewayFixture.start(instances: 4, gpus: 2, simulator: sim)
        let victim = gw.instances[1]
        let results = try await gw.load(total: 500, concurrency: 16) { client, i in
            if i == 150 { try await victim.stop() }
            return try await client.chat(key: TestKeys.engineering)
        }
        let failures = results.filter { (try? $0.get().status) != 200 }
        XCTAssertEqual(failures.count, 0, "client errors: \(failures.prefix(3))")
        XCTAssertEqual(results.count, 500)
        XCTAssertFalse(victim.isRunning)

        try await victim.restart()
        let before = victim.stats.generations
        let back = await gw.eventually(timeout: .seconds(10)) {
            _ = try? await gw.load(total: 8, concurrency: 2) { client, _ in try await client.chat(key: TestKeys.engineering) }
            return victim.stats.generations > before
        }
        XCTAssertTrue(back, "the restarted instance receives requests again")
        await gw.stop()
    }

    func testServerErrorsAreRetriedOnAnotherInstance() async throws {
        let gw = try await GatewayFixture.start(instances: 3, gpus: 3) { config in
            config.health.probePath = ""   // passive only
            config.health.maxFails = 1000
        }
        var broken = SimulatorConfiguration()
        broken.errorRate = 1
        broken.errorStatus = 503
        gw.instances[0].update(broken)
        let results = try await gw.load(total: 90, concurrency: 3) { client, _ in try await client.chat(key: TestKeys.engineering) }
        XCTAssertTrue(results.allSatisfy { (try? $0.get().status) == 200 })
        XCTAssertEqual(gw.instances[0].stats.generations, 0)
        XCTAssertGreaterThan(gw.instances[0].stats.errors, 0, "the broken instance was tried, then skipped")
        await gw.stop()
    }

    func testPassiveEjectionAfterMaxFails() async throws {
        let gw = try await GatewayFixture.start(instances: 2, gpus: 2) { config in
            config.health.probePath = ""
            config.health.maxFails = 3
            config.health.failTimeout = .seconds(30)
        }
        var broken = SimulatorConfiguration()
        broken.errorRate = 1
        broken.errorStatus = 502
        gw.instances[0].update(broken)
        let results = try await gw.load(total: 60, concurrency: 1) { client, _ in try await client.chat(key: TestKeys.engineering) }
        XCTAssertTrue(results.allSatisfy { (try? $0.get().status) == 200 })
        // Three failures eject it; then it is skipped for fail_timeout. The ejection reaches the
        // loops through the health monitor's loop, so one more request may race it.
        XCTAssertTrue((3...4).contains(gw.instances[0].stats.errors), "errors \(gw.instances[0].stats.errors)")
        await gw.stop()
    }

    func testHungInstanceTimesOutAndIsRetried() async throws {
        let gw = try await GatewayFixture.start(instances: 2, gpus: 2) { config in
            config.health.probePath = ""
            config.timeouts.perTry = .milliseconds(300)
        }
        var hung = SimulatorConfiguration()
        hung.hang = true
        gw.instances[0].update(hung)
        let client = try await gw.client()
        for _ in 0..<4 {
            let start = ContinuousClock.now
            let answer = try await client.chat(key: TestKeys.engineering)
            XCTAssertEqual(answer.status, 200)
            XCTAssertLessThan(ContinuousClock.now - start, .seconds(2))
        }
        await client.close()
        await gw.stop()
    }

    func testAllInstancesDownAnswers503Quickly() async throws {
        let gw = try await GatewayFixture.start(instances: 3, gpus: 3)
        for sim in gw.instances { try await sim.stop() }
        let client = try await gw.client()
        for _ in 0..<3 {
            let start = ContinuousClock.now
            let answer = try await client.chat(key: TestKeys.engineering)
            XCTAssertLessThan(ContinuousClock.now - start, .seconds(1))
            XCTAssertTrue([502, 503].contains(answer.status), "status \(answer.status)")
            XCTAssertNotNil(answer.headers.first(name: "retry-after"))
            XCTAssertEqual(answer.errorType, "server_error")
        }
        // Once the probes have marked them all down, the answer is 503 without any try.
        let allDown = await gw.eventually { gw.dataPlane.state.availability.allSatisfy { !$0.probeUp } }
        XCTAssertTrue(allDown)
        let answer = try await client.chat(key: TestKeys.engineering)
        XCTAssertEqual(answer.status, 503)
        XCTAssertEqual(answer.errorCode, "no_instance_available")
        await client.close()
        await gw.stop()
    }
}
