import Foundation
import TollgateTestSupport
import XCTest

/// The official `openai` Python package against the gateway (see `PythonSDK`).
final class OpenAISDKTests: XCTestCase {
    func testOfficialPythonSDKGetsChatAndStreamedAnswers() async throws {
        let gw = try await GatewayFixture.start(instances: 2)
        let result = try PythonSDK.run("openai_check.py", baseURL: "http://127.0.0.1:\(gw.port)/v1", key: TestKeys.engineering)
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("OK"), result.output)
        await gw.stop()
    }
}
