import Foundation

/// A child process's standard output and error, collected as they come, so a test can wait for
/// a line instead of sleeping for a guessed time.
final class ProcessOutput: @unchecked Sendable {
    private let lock = NSLock()
    private var collected = Data()

    init(_ process: Process) {
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self else { return }
            if data.isEmpty { handle.readabilityHandler = nil; return }
            self.lock.withLock { self.collected.append(data) }
        }
    }

    var text: String { lock.withLock { String(decoding: collected, as: UTF8.self) } }

    /// Waits until the output contains `needle`; fails after `timeout`.
    @discardableResult
    func waitFor(_ needle: String, timeout: Duration = .seconds(30)) async throws -> String {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            let t = text
            if t.contains(needle) { return t }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TimedOut(what: "\"\(needle)\" in the process's output", output: text)
    }

    /// The port of a plane's "data plane listening address=…:PORT" (or "control plane …") log
    /// line: the gateway binds the port 0 it was given and says which port it got.
    func listeningPort(_ plane: String = "data plane", timeout: Duration = .seconds(30)) async throws -> Int {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            for line in text.split(separator: "\n") where line.contains("\(plane) listening") {
                if let address = line.split(separator: " ").first(where: { $0.hasPrefix("address=") }),
                   let port = address.split(separator: ":").last.flatMap({ Int($0) }) {
                    return port
                }
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw TimedOut(what: "the \(plane)'s listening line", output: text)
    }

    struct TimedOut: Error, CustomStringConvertible {
        var what: String
        var output: String
        var description: String { "timed out waiting for \(what); output so far:\n\(output)" }
    }
}
