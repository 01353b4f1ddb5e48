import Foundation
import NIOCore
import NIOHTTP1
import TollgateCore
import TollgateTestSupport
import XCTest

/// Admin sessions are signed cookies: a cookie whose id, end or signature was changed is no
/// session; nor is one that has ended.
final class AdminSessionTests: XCTestCase {
    func testATamperedOrEndedCookieIsNoSession() async throws {
        let h = try await AdminHarness.start()
        defer { Task { await h.stop() } }
        let admin = try await h.admin()
        let encoded = h.adminKey.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        var a = try await admin.send(.POST, "/admin/login", body: "key=\(encoded)", headers: [("content-type", "application/x-www-form-urlencoded")])
        XCTAssertEqual(a.status, 303, a.body)
        let cookie = String(try XCTUnwrap(a.headers.first(name: "set-cookie")).split(separator: ";")[0])
        let value = String(cookie.dropFirst("tollgate_admin_session=".count))
        let parts = value.split(separator: ".").map(String.init)
        XCTAssertEqual(parts.count, 3, value)
        a = try await admin.send(.GET, "/admin/api/keys", headers: [("cookie", cookie)])
        XCTAssertEqual(a.status, 200, a.body)

        func flip(_ s: String) -> String { (s.first == "a" ? "b" : "a") + s.dropFirst() }
        let later = String((Int64(parts[1]) ?? 0) + 3_600)
        let forged = [
            "\(flip(parts[0])).\(parts[1]).\(parts[2])",  // another id
            "\(parts[0]).\(later).\(parts[2])",  // a later end
            "\(parts[0]).\(parts[1]).\(flip(parts[2]))",  // another signature
            "\(parts[0]).1.\(parts[2])",  // ended long ago
            "\(parts[0]).\(parts[1])",  // no signature
            String(repeating: "a", count: 5_000),
        ]
        for f in forged {
            a = try await admin.send(.GET, "/admin/api/keys", headers: [("cookie", "tollgate_admin_session=\(f)")])
            XCTAssertEqual(a.status, 401, "\(f.prefix(80)): \(a.body)")
        }
        await admin.close()
    }
}
