import Foundation
import XCTest

/// The official `openai` Python package against the gateway. `scripts/test` installs it and
/// sets TOLLGATE_REQUIRE_SDK=1, so that in CI a missing package fails instead of skipping.
final class OpenAISDKTests: XCTestCase {
    func testOfficialPythonSDKGetsChatAndStreamedAnswers() async throws {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        probe.arguments = ["python3", "-c", "import openai"]
        probe.standardError = FileHandle.nullDevice
        try probe.run()
        probe.waitUntilExit()
        if probe.terminationStatus != 0 {
            if ProcessInfo.processInfo.environment["TOLLGATE_REQUIRE_SDK"] == "1" {
                XCTFail("python3 cannot import openai (pip install openai)")
                return
            }
            throw XCTSkip("python3 cannot import openai; scripts/test installs it")
        }
        let gw = try await GatewayFixture.start(instances: 2)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("sdk/openai_check.py")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path, "http://127.0.0.1:\(gw.port)/v1", TestKeys.engineering]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, output)
        XCTAssertTrue(output.contains("OK"), output)
        await gw.stop()
    }
}
