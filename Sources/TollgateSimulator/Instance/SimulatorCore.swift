import Atomics
import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// The state one simulated instance shares between its listener and all its connections, whatever
/// event loop they run on. Every mutable part sits behind a lock (held for a few instructions, never
/// across I/O) or in an atomic.
final class SimulatorCore: Sendable {
    /// The configuration with what is derived from it once per `update`, not per request.
    struct Settings: Sendable {
        var configuration: SimulatorConfiguration
        /// `configuration.model`, escaped for JSON.
        var modelJSON: String

        init(_ configuration: SimulatorConfiguration) {
            self.configuration = configuration
            self.modelJSON = ResponseRenderer.jsonEscaped(configuration.model)
        }
    }

    /// The open connections, so that `stop()` can cut them all like a dying process.
    struct Connections {
        /// False while the instance is stopped: connections still being accepted are closed at once.
        var accepting = true
        var channels: [ObjectIdentifier: any Channel] = [:]
    }

    let name: String
    let gpu: String
    /// Reported as `created` by `/v1/models`: when the instance started.
    let created: Int
    let settings: NIOLockedValueBox<Settings>
    let stats = NIOLockedValueBox(SimulatorStats())
    let scheduler: GenerationScheduler
    let connections = NIOLockedValueBox(Connections())
    /// Random per instance, so ids from different instances (or runs) never collide.
    private let idPrefix: String
    private let idCounter = ManagedAtomic<UInt64>(0)

    init(name: String, gpu: String, configuration: SimulatorConfiguration) {
        self.name = name
        self.gpu = gpu
        self.created = Int(Date().timeIntervalSince1970)
        self.settings = NIOLockedValueBox(Settings(configuration))
        self.scheduler = GenerationScheduler(capacity: configuration.capacity)
        self.idPrefix = String(UInt32.random(in: 0...UInt32.max), radix: 16)
    }

    /// The settings requests arriving now are served with.
    var currentSettings: Settings { self.settings.withLockedValue { $0 } }

    /// Replaces the configuration for requests arriving from now on.
    func update(_ configuration: SimulatorConfiguration) {
        self.settings.withLockedValue { $0 = Settings(configuration) }
        self.scheduler.setCapacity(configuration.capacity)
    }

    /// A fresh completion id such as `chatcmpl-1a2b3c4d000000000000002a`.
    func makeID(prefix: String) -> String {
        let number = self.idCounter.loadThenWrappingIncrement(ordering: .relaxed)
        let hex = String(number, radix: 16)
        return prefix + self.idPrefix + String(repeating: "0", count: max(0, 16 - hex.count)) + hex
    }

    /// Records an accepted connection; false when the instance is stopped and the channel must be closed.
    func register(_ channel: any Channel) -> Bool {
        let accepted = self.connections.withLockedValue { connections in
            guard connections.accepting else { return false }
            connections.channels[ObjectIdentifier(channel)] = channel
            return true
        }
        if accepted {
            channel.closeFuture.whenComplete { [self] _ in
                _ = self.connections.withLockedValue { $0.channels.removeValue(forKey: ObjectIdentifier(channel)) }
            }
        }
        return accepted
    }

    /// Stops accepting connections and returns the open ones, for the caller to close.
    func stopAccepting() -> [any Channel] {
        self.connections.withLockedValue { connections in
            connections.accepting = false
            defer { connections.channels.removeAll() }
            return Array(connections.channels.values)
        }
    }

    /// Accepts connections again (after a restart).
    func resumeAccepting() {
        self.connections.withLockedValue { $0.accepting = true }
    }
}
