import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import TollgateSimulator

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim",
        abstract: "Run simulated OpenAI-compatible inference instances (stand-ins for GPU servers).")

    @Option(help: "Number of instances, named qwen-0, qwen-1, ...") var instances = 8
    @Option(help: "Port of the first instance; the others follow (0: pick free ports).") var basePort = 8001
    @Option(help: "GPUs the instances are spread over (instance i reports GPU i % gpus).") var gpus = 4
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Model id served.") var model = "qwen2.5-0.5b-instruct"
    @Option(help: "Time to first token, in milliseconds.") var ttftMs = 200
    @Option(help: "Tokens generated per second per request (0: no delay).") var tokensPerSecond: Double = 50
    @Option(help: "Concurrent generations per instance; more queue (0: unlimited).") var capacity = 8
    @Option(help: "Completion tokens when a request sets no max_tokens.") var defaultTokens = 16
    @Option(help: "Fraction of generation requests answered with --error-status.") var errorRate: Double = 0
    @Option(help: "Status of injected errors.") var errorStatus = 500
    @Flag(help: "Accept requests but never answer (a hung server).") var hang = false

    func run() async throws {
        var config = SimulatorConfiguration()
        config.model = model
        config.timeToFirstToken = .milliseconds(Int64(ttftMs))
        config.tokensPerSecond = tokensPerSecond
        config.capacity = capacity
        config.defaultCompletionTokens = defaultTokens
        config.errorRate = errorRate
        config.errorStatus = errorStatus
        config.hang = hang
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let fleet = try await SimulatorFleet.start(
            count: instances, basePort: basePort, gpus: max(1, gpus), host: host, configuration: config, group: group)
        var lines = ""
        for instance in fleet.instances {
            lines += "\(instance.name)  gpu \(instance.gpu)  http://\(host):\(instance.port)\n"
        }
        lines += "simulating \(instances) instance(s) of \(model): ttft \(ttftMs) ms, \(tokensPerSecond) tok/s, capacity \(capacity). Ctrl-C stops.\n"
        FileHandle.standardOutput.write(Data(lines.utf8))
        await waitForTerminationSignal()
        try await fleet.stop()
        try await group.shutdownGracefully()
    }
}

/// Suspends until SIGINT or SIGTERM arrives.
func waitForTerminationSignal() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        SignalWaiter.shared.wait(continuation)
    }
}

/// Holds the dispatch sources of SIGINT and SIGTERM; resumes the waiter once.
private final class SignalWaiter: @unchecked Sendable {
    // Touched only on `queue`.
    static let shared = SignalWaiter()
    private let queue = DispatchQueue(label: "tollgate.signals")
    private var sources: [any DispatchSourceSignal] = []
    private var continuation: CheckedContinuation<Void, Never>?

    func wait(_ c: CheckedContinuation<Void, Never>) {
        queue.async {
            self.continuation = c
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: self.queue)
                source.setEventHandler {
                    self.continuation?.resume()
                    self.continuation = nil
                }
                source.resume()
                self.sources.append(source)
            }
        }
    }
}
