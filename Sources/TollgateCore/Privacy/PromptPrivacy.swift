/// How much of a prompt the usage ledger keeps (`usage.prompt_preview`, the admin page's
/// "top prompts"): nothing, or its first N characters.
///
/// Configured globally (`prompt_preview`) and per department (`departments[].prompt_preview`),
/// `off` or a number of characters (1…`PromptPrivacy.maxLength`); default 120, as before the
/// setting existed. A department's value wins over the global one.
public enum PromptPreviewPolicy: Sendable, Equatable {
    /// No preview is stored.
    case off
    /// The first `n` characters (grapheme clusters) are stored.
    case characters(Int)

    /// The default: the first 120 characters.
    public static let standard = PromptPreviewPolicy.characters(PromptPrivacy.defaultLength)

    public var isOff: Bool { self == .off }
}

/// Where a prompt preview is made: the one function that applies the policy.
public enum PromptPrivacy {
    /// Characters kept by default.
    public static let defaultLength = 120
    /// The most characters a policy may keep: a preview is for recognising a prompt, not for
    /// keeping it.
    public static let maxLength = 1_000

    /// The preview of `text` to store under `policy`: nil when previews are off or the text
    /// is empty, else its first N characters. Pure; cheap enough for the event loop.
    public static func preview(_ text: String, policy: PromptPreviewPolicy) -> String? {
        guard case .characters(let n) = policy, n > 0, !text.isEmpty else { return nil }
        return String(text.prefix(min(n, maxLength)))
    }
}

extension GatewayConfiguration {
    /// The prompt preview policy of the department `name`: its own, else the global one.
    public func promptPreview(forDepartment name: String) -> PromptPreviewPolicy {
        departments.first { $0.name == name }?.promptPreview ?? promptPreview
    }
}
