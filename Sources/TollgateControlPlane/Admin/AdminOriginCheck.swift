/// Cross-site request forgery: whether a state-changing admin request that the session
/// cookie authenticates comes from the admin page itself.
///
/// The cookie is `SameSite=Strict`, but "site" ignores the port: any other service on the same
/// host (another port on 127.0.0.1, the data plane included) is the same site, and its pages
/// get the cookie attached to a form or `fetch` POST. A `text/plain` POST needs no CORS
/// preflight, so without this check such a page could create keys. Hence, for POST, PUT,
/// PATCH and DELETE with the cookie:
/// - `Sec-Fetch-Site`, when the browser sends it, must be `same-origin` or `none` (typed by
///   the user);
/// - `Origin`, when sent, must name this server (its authority equal to `Host`); `null`
///   (sandboxed frames, some redirects) is refused;
/// - one of the two must be there: browsers send `Origin` on every cross-origin POST, so its
///   absence together with `Sec-Fetch-Site`'s is no browser request made by a page;
/// - a body must be `application/json`: what a form can post (`text/plain`, form-encoded,
///   multipart) is refused even from the same origin.
///
/// Requests with `Authorization: Bearer` are not checked: a browser never adds that header
/// by itself, so a page elsewhere cannot forge it. `POST /admin/login` is not checked either:
/// it carries the admin key itself, and logging a browser in with a key one already has
/// gains nothing (there is one admin identity).
struct AdminOriginCheck: Equatable, Sendable {
    /// Why a request was refused; nil when it may pass.
    let refusal: String?

    var isAllowed: Bool { refusal == nil }

    /// - Parameters:
    ///   - host: the `Host` header (`127.0.0.1:8081`).
    ///   - hasBody: a non-zero `Content-Length` (what a browser sends with a body).
    init(method: String, host: String?, origin: String?, fetchSite: String?, contentType: String?, hasBody: Bool) {
        refusal = Self.check(method: method, host: host, origin: origin, fetchSite: fetchSite, contentType: contentType, hasBody: hasBody)
    }

    private static func check(method: String, host: String?, origin: String?, fetchSite: String?, contentType: String?,
                              hasBody: Bool) -> String? {
        guard !["GET", "HEAD", "OPTIONS"].contains(method.uppercased()) else { return nil }
        if let fetchSite {
            let site = fetchSite.trimmingSpaces.lowercased()
            guard site == "same-origin" || site == "none" else { return "Sec-Fetch-Site is \"\(fetchSite)\", not same-origin" }
        }
        if let origin {
            guard let authority = Self.authority(ofOrigin: origin), let host,
                  Self.normalized(authority.host, scheme: authority.scheme) == Self.normalized(host.trimmingSpaces.lowercased(), scheme: authority.scheme)
            else { return "Origin \"\(origin)\" is not this server (Host \(host ?? "missing"))" }
        }
        if origin == nil && fetchSite == nil { return "neither Origin nor Sec-Fetch-Site says where the request comes from" }
        if hasBody {
            let media = (contentType ?? "").split(separator: ";", maxSplits: 1).first.map { String($0).trimmingSpaces.lowercased() } ?? ""
            guard media == "application/json" else { return "the body is \(media.isEmpty ? "without a Content-Type" : media), not application/json" }
        }
        return nil
    }

    /// `http://127.0.0.1:8081` → (`http`, `127.0.0.1:8081`); nil for `null` or anything that is
    /// not `scheme://authority` without a path.
    static func authority(ofOrigin origin: String) -> (scheme: String, host: String)? {
        let text = origin.trimmingSpaces.lowercased()
        guard let range = text.firstRange(of: "://") else { return nil }
        let scheme = String(text[..<range.lowerBound])
        let host = String(text[range.upperBound...])
        guard scheme == "http" || scheme == "https", !host.isEmpty, !host.contains("/"), !host.contains("@") else { return nil }
        return (scheme, host)
    }

    /// The authority without the scheme's default port.
    private static func normalized(_ authority: String, scheme: String) -> String {
        let port = scheme == "https" ? ":443" : ":80"
        return authority.hasSuffix(port) ? String(authority.dropLast(port.count)) : authority
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" { s.removeLast() }
        return String(s)
    }
}
