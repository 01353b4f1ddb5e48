import NIOCore

/// A set of simulated instances standing in for a multi-GPU inference deployment: by default eight
/// `qwen2.5-0.5b-instruct` servers on ports 8001–8008 sharing `gpus` GPUs.
public final class SimulatorFleet: Sendable {
    /// The instances, in order: `qwen-0`, `qwen-1`, …
    public let instances: [SimulatedInstance]

    private init(instances: [SimulatedInstance]) {
        self.instances = instances
    }

    /// Starts `count` instances named `qwen-0`, `qwen-1`, … on `basePort`, `basePort + 1`, …
    /// (`basePort` 0 = each picks a free port), instance `i` on GPU `String(i % gpus)`.
    /// If one fails to start, those already started are stopped and the error is thrown.
    public static func start(
        count: Int,
        basePort: Int,
        gpus: Int,
        host: String = "127.0.0.1",
        configuration: SimulatorConfiguration,
        group: any EventLoopGroup
    ) async throws -> SimulatorFleet {
        var instances: [SimulatedInstance] = []
        do {
            for index in 0..<max(0, count) {
                instances.append(
                    try await SimulatedInstance.start(
                        name: "qwen-\(index)",
                        host: host,
                        port: basePort == 0 ? 0 : basePort + index,
                        gpu: String(index % max(1, gpus)),
                        configuration: configuration,
                        group: group
                    )
                )
            }
        } catch {
            for instance in instances { try? await instance.stop() }
            throw error
        }
        return SimulatorFleet(instances: instances)
    }

    /// The instance called `name`, if any.
    public func instance(named name: String) -> SimulatedInstance? {
        self.instances.first { $0.name == name }
    }

    /// Applies `configuration` to every instance.
    public func update(_ configuration: SimulatorConfiguration) {
        for instance in self.instances { instance.update(configuration) }
    }

    /// Stops every instance; throws the first error after trying them all.
    public func stop() async throws {
        var firstError: (any Error)?
        for instance in self.instances {
            do { try await instance.stop() } catch { firstError = firstError ?? error }
        }
        if let firstError { throw firstError }
    }
}
