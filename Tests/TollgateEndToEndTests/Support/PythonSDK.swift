import Foundation
import XCTest

/// Runs one of the `sdk/*.py` scripts with the official `openai` Python package against a
/// gateway. `scripts/test` installs the package and sets TOLLGATE_REQUIRE_SDK=1, so that in CI
/// a missing package fails instead of skipping.
enum PythonSDK {
    static func run(_ script: String, baseURL: String, key: String) throws -> (status: Int32, output: String) {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        probe.arguments = ["python3", "-c", "import openai"]
        probe.standardError = FileHandle.nullDevice
        try probe.run()
        probe.waitUntilExit()
        if probe.terminationStatus != 0 {
            if ProcessInfo.processInfo.environment["TOLLGATE_REQUIRE_SDK"] == "1" {
                return (1, "python3 cannot import openai (pip install openai)")
            }
            throw XCTSkip("python3 cannot import openai; scripts/test installs it")
        }
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("sdk").appendingPathComponent(script)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", path.path, baseURL, key]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }
}
