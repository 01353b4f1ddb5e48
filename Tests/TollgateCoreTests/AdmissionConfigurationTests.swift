import Foundation
import TollgateCore
import XCTest

/// The keys of the waiting line: `pools[].max_in_flight`, `departments[].priority` and
/// `queue_weight`, `admission`, `retry.budget`/`min_retries`, `health.metrics_path`.
final class AdmissionConfigurationTests: XCTestCase {
    func errors(_ yaml: String) -> [ConfigurationError] {
        do {
            _ = try ConfigurationLoader.parse(yaml, file: "test.yaml")
            XCTFail("expected an error")
            return []
        } catch let e as ConfigurationErrors {
            return e.errors
        } catch {
            XCTFail("\(error)")
            return []
        }
    }

    let pool = """
        pools:
          - name: qwen
            models: [m]
            max_in_flight: 10
            instances:
              - {name: a, url: "http://127.0.0.1:9001"}
              - {name: b, url: "http://127.0.0.1:9002", max_in_flight: 4}
        """

    func testDefaults() throws {
        let c = try ConfigurationLoader.parse("pools: [{name: q, models: [m], instances: [{name: a, url: 'http://127.0.0.1:9001'}]}]\ndepartments: [{name: d}]")
        XCTAssertEqual(c.admission, AdmissionSettings())
        XCTAssertEqual(c.admission[.interactive], LaneSettings(timeout: .seconds(10), maxQueue: 1000))
        XCTAssertEqual(c.admission[.batch].timeout, .seconds(120))
        XCTAssertEqual(c.retry.budgetPerMille, 200)
        XCTAssertEqual(c.retry.minRetries, 3)
        XCTAssertEqual(c.health.metricsPath, "")
        XCTAssertEqual(c.departments[0].priority, .standard)
        XCTAssertEqual(c.departments[0].queueWeight, 1)
        XCTAssertEqual(c.pools[0].maxInFlight, 0)
    }

    func testThePoolsLimitIsTheDefaultOfItsInstances() throws {
        let table = RoutingTable(configuration: try ConfigurationLoader.parse(pool))
        XCTAssertEqual(table.instances.map(\.maxInFlight), [10, 4], "an instance's own limit wins")
        XCTAssertTrue(table.render().contains("max_in_flight 10"), table.render())
        XCTAssertTrue(table.render().contains("when full, requests wait (timeout / max_queue): interactive 10s / 1000, standard 30s / 1000, batch 120s / 5000; min share 10%; slots kept for higher lanes' peak of the last 1s; retry budget 20% (min 3)"), table.render())
    }

    func testEveryKeyIsRead() throws {
        let c = try ConfigurationLoader.parse(pool + """

            retry: {attempts: 2, budget: 25%, min_retries: 1}
            health: {metrics_path: /metrics}
            admission:
              min_share: 0.05
              reserve_window: 500ms
              lanes:
                interactive: {timeout: 2s, max_queue: 50}
                batch: {timeout: 5m}
            departments:
              - {name: cs, priority: interactive, queue_weight: 3}
              - {name: etl, priority: batch}
            """)
        XCTAssertEqual(c.retry.budgetPerMille, 250)
        XCTAssertEqual(c.retry.minRetries, 1)
        XCTAssertEqual(c.health.metricsPath, "/metrics")
        XCTAssertEqual(c.admission.minSharePerMille, 50)
        XCTAssertEqual(c.admission.reserveWindow, .milliseconds(500))
        XCTAssertEqual(try ConfigurationLoader.parse(pool + "\nadmission: {reserve_window: 0s}\n").admission.reserveWindow, .zero, "0 turns it off")
        XCTAssertEqual(c.admission[.interactive], LaneSettings(timeout: .seconds(2), maxQueue: 50))
        XCTAssertEqual(c.admission[.standard], AdmissionSettings()[.standard])
        XCTAssertEqual(c.admission[.batch], LaneSettings(timeout: .seconds(300), maxQueue: 5000))
        XCTAssertEqual(c.departments.map(\.priority), [.interactive, .batch])
        XCTAssertEqual(c.departments.map(\.queueWeight), [3, 1])
        let table = RoutingTable(configuration: c)
        XCTAssertEqual(table.departments.map(\.lane), [.interactive, .batch])
        XCTAssertTrue(table.render().contains("cs (0 keys)  priority interactive, queue weight 3"), table.render())
    }

    func testBadValuesNameTheirKey() {
        let e = errors(pool + """

            retry: {budget: 150%, min_retries: -1}
            health: {metrics_path: metrics}
            admission:
              min_share: 90%
              reserve_window: 2m
              lanes:
                urgent: {timeout: 1s}
                batch: {timeout: 0s, max_queue: 9223372036854775807}
            departments:
              - {name: cs, priority: Interactive, queue_weight: 0}
            """)
        XCTAssertEqual(Set(e.map(\.key)), [
            "retry.budget", "retry.min_retries", "health.metrics_path", "admission.min_share", "admission.reserve_window", "admission.lanes.urgent",
            "admission.lanes.batch.timeout", "admission.lanes.batch.max_queue", "departments[0].priority", "departments[0].queue_weight",
        ], "\(e)")
        XCTAssertTrue(e.first { $0.key == "departments[0].priority" }!.message.contains("interactive, standard, batch"), "\(e)")
        XCTAssertTrue(e.first { $0.key == "admission.min_share" }!.message.contains("50%"), "\(e)")
        XCTAssertEqual(errors("pools: [{name: q, models: [m], max_in_flight: 2000000, instances: [{name: a, url: 'http://h:1'}]}]").map(\.key),
                       ["pools[0].max_in_flight"])
    }

    func testTheExampleSetsALimitThatFitsTheSimulator() throws {
        let c = try ConfigurationLoader.load(path: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("routes").path)
        XCTAssertEqual(c.pools[0].maxInFlight, 8, "scripts/run's simulated instances serve 8 generations at once")
        XCTAssertEqual(c.departments.first { $0.name == "customer-service" }?.priority, .interactive)
        XCTAssertEqual(c.departments.first { $0.name == "analytics" }?.priority, .batch)
    }
}
