import Foundation
import TollgateCore

/// Reads the admin key: `TOLLGATE_ADMIN_KEY`, else the file `auth.admin_key_file` names.
///
/// The file must be readable by its owner only: a key file others can read is as good as
/// leaked, so it is refused (at start the gateway does not start; on reload the reload is
/// refused and the running key stays) with the command that fixes it.
public enum AdminKeyFile {
    /// The key, or nil when none is configured (or the value is empty).
    public static func read(configuration: GatewayConfiguration,
                     environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String? {
        if let key = environment["TOLLGATE_ADMIN_KEY"] {
            return key.isEmpty ? nil : key
        }
        guard let path = configuration.auth.adminKeyFile else { return nil }
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw AdminKeyFileError.unreadable(path, String(cString: strerror(errno)))
        }
        let mode = info.st_mode & 0o777
        guard mode & 0o077 == 0 else { throw AdminKeyFileError.readableByOthers(path, mode: mode) }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw AdminKeyFileError.unreadable(path, "\(error.localizedDescription)")
        }
        let key = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return key.isEmpty ? nil : key
    }
}

/// The admin key file cannot be used; the message says what to do.
public struct AdminKeyFileError: Error, Sendable, CustomStringConvertible {
    private enum Code: Sendable { case readableByOthers, unreadable }
    private let code: Code
    public let description: String

    /// Whether the file is readable but refused for its permissions.
    public var isInsecure: Bool { code == .readableByOthers }

    static func readableByOthers(_ path: String, mode: mode_t) -> AdminKeyFileError {
        AdminKeyFileError(code: .readableByOthers, description:
            "auth.admin_key_file \(path) is readable by group or others (mode \(String(mode, radix: 8))); the key in it must be treated as leaked: replace it and run `chmod 600 \(path)`.")
    }

    static func unreadable(_ path: String, _ reason: String) -> AdminKeyFileError {
        AdminKeyFileError(code: .unreadable, description: "auth.admin_key_file \(path) cannot be read: \(reason).")
    }
}
