import Foundation
import Hummingbird
import NIOCore
import TollgateCore
import TollgateDataPlane

/// `/admin`: the server-rendered admin page behind a login with the admin key.
///
/// - `GET /admin[?window=1h|24h|7d]` — the page; without a session, a redirect to the login.
/// - `GET /admin/login` — the form; `POST /admin/login` with `key=<admin key>` (form-encoded)
///   sets the session cookie and redirects to `/admin`. A department key gets 403, any other
///   key 401; no admin key configured, 503.
/// - `POST /admin/logout` — ends the session; only from the page itself (`AdminOriginCheck`).
/// `HTTPField.Name` (Hummingbird exports only `HTTPFields`).
private typealias FieldName = HTTPFields.Element.Name

extension ControlPlane {
    /// What the page may load: nothing from elsewhere, no script, forms only to itself.
    static let pageSecurityHeaders: HTTPFields = [
        .contentType: "text/html; charset=utf-8",
        .cacheControl: "no-store",
        FieldName("Content-Security-Policy")!: "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        FieldName("X-Content-Type-Options")!: "nosniff",
        FieldName("X-Frame-Options")!: "DENY",
        FieldName("Referrer-Policy")!: "no-referrer",
    ]

    static func html(_ status: HTTPResponse.Status, _ text: String, cookie: String? = nil) -> Response {
        var headers = pageSecurityHeaders
        if let cookie { headers[values: .setCookie].append(cookie) }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func redirect(_ location: String, cookie: String? = nil) -> Response {
        var headers: HTTPFields = [.location: location, .cacheControl: "no-store"]
        if let cookie { headers[values: .setCookie].append(cookie) }
        return Response(status: .seeOther, headers: headers)
    }

    static func addAdminPage(to router: Router<BasicRequestContext>, services: AdminServices, dataPlane: DataPlane,
                             sessions: AdminSessions) {
        router.get("admin") { request, _ -> Response in
            guard services.adminKey.digest != nil else {
                return html(.serviceUnavailable, AdminPageHTML.message(
                    title: "Admin page off", text: "No admin key is configured (TOLLGATE_ADMIN_KEY or auth.admin_key_file)."))
            }
            guard sessions.isValid(sessionID(request)) else { return redirect("/admin/login") }
            let parameter = request.uri.queryParameters.get("window") ?? AdminWindow.defaultWindow.rawValue
            guard let window = AdminWindow(rawValue: parameter) else {
                return html(.badRequest, AdminPageHTML.message(
                    title: "Unknown window", text: "window must be one of \(AdminWindow.allCases.map(\.rawValue).joined(separator: ", "))."))
            }
            let overview = try await AdminOverview.build(window: window, services: services, dataPlane: dataPlane)
            return html(.ok, AdminPageHTML.page(overview))
        }

        router.get("admin/login") { request, _ -> Response in
            if sessions.isValid(sessionID(request)) { return redirect("/admin") }
            return html(.ok, AdminPageHTML.login(message: nil))
        }

        router.post("admin/login") { request, _ -> Response in
            guard let admin = services.adminKey.digest else {
                return html(.serviceUnavailable, AdminPageHTML.message(
                    title: "Admin page off", text: "No admin key is configured (TOLLGATE_ADMIN_KEY or auth.admin_key_file)."))
            }
            var request = request
            let body: ByteBuffer
            do {
                body = try await request.collectBody(upTo: 4096)
            } catch {
                return html(.contentTooLarge, AdminPageHTML.login(message: "The form is too large."))
            }
            let key = formField("key", in: String(buffer: body)) ?? ""
            guard !key.isEmpty else { return html(.unauthorized, AdminPageHTML.login(message: "Enter the admin key.")) }
            let digest = KeyDigest(hashing: Array(key.utf8))
            if digest == admin {
                return redirect("/admin", cookie: sessions.cookie(for: sessions.create()))
            }
            let state = dataPlane.state
            if state.keys.lookup(digest) != nil || state.table.department(forKey: digest) != nil {
                return html(.forbidden, AdminPageHTML.login(message: "A department key cannot open the admin page."))
            }
            return html(.unauthorized, AdminPageHTML.login(message: "Incorrect admin key."))
        }

        router.post("admin/logout") { request, _ -> Response in
            // Ending a session is a change too: only the page itself may (AdminOriginCheck).
            let check = AdminOriginCheck(request)
            guard check.isAllowed else { return crossSiteRefusal(check) }
            sessions.remove(sessionID(request))
            return redirect("/admin/login", cookie: AdminSessions.expiredCookie)
        }
    }

    static func sessionID(_ request: Request) -> String? { request.cookies[AdminSessions.cookieName]?.value }

    /// The value of `name` in an `application/x-www-form-urlencoded` body.
    static func formField(_ name: String, in body: String) -> String? {
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { continue }
            func decode(_ s: Substring) -> String? { s.replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
            if decode(parts[0]) == name { return decode(parts[1]) }
        }
        return nil
    }
}
