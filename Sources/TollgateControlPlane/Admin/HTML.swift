import Foundation

/// Small helpers for server-rendered HTML: escaping and number formats.
enum HTML {
    /// Escapes text for an element's content or a quoted attribute value.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for ch in text.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            case "\u{0}"..."\u{8}", "\u{B}", "\u{C}", "\u{E}"..."\u{1F}", "\u{7F}": out += "\u{FFFD}"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    /// At most `count` characters, with an ellipsis when cut.
    static func truncate(_ text: String, _ count: Int) -> String {
        text.count > count ? String(text.prefix(count)) + "…" : text
    }

    /// 12,345
    static func integer(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var out = ""
        for (i, ch) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out += "," }
            out.append(ch)
        }
        return (value < 0 ? "-" : "") + out
    }

    /// 42.9% from a fraction.
    static func percent(fraction: Double) -> String { String(format: "%.1f%%", fraction * 100) }
    static func percent(_ value: Double) -> String { String(format: "%.1f%%", value) }
    static func ms(_ value: Double) -> String { String(format: value < 10 ? "%.1f ms" : "%.0f ms", value) }

    /// A raw figure for a `data-value` attribute (what tests read back).
    static func raw(_ value: Double) -> String { String(format: "%.6f", value) }
}
