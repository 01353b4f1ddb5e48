import NIOCore
import TollgateCore

/// The first 120 characters of the last user message (chat) or of the prompt, for the admin
/// page's most frequent prompts. Only computed for cacheable requests; read with the request
/// scanner's parser (a Foundation JSON parse here cost ~4% of a cache hit).
func promptPreview(body: ByteBuffer, range: Range<Int>?) -> String? {
    guard let range else { return nil }
    return body.withUnsafeReadableBytes { raw -> String? in
        guard range.upperBound <= raw.count else { return nil }
        // As much as any department's policy may keep; each row applies its own policy
        // (`PromptPrivacy.preview`), since a shared cache serves several departments.
        return RequestScanner.promptText(UnsafeRawBufferPointer(rebasing: raw[range])).map { String($0.prefix(PromptPrivacy.maxLength)) }
    }
}
