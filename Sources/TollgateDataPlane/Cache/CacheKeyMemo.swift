import Foundation
import NIOCore
import TollgateCore

/// Raw request body → its cache key and prompt preview, per event loop: a body asked again (a
/// repeated prompt, byte for byte, found in Redis) is not canonicalized, hashed or read again.
/// Found by a `Hasher` of the body (SipHash, seeded per process) and confirmed by comparing the
/// bytes, so a collision can never hand one body another's key; the namespace, endpoint and
/// model are part of the match.
final class CacheKeyMemo {
    struct Entry {
        let body: [UInt8]
        let namespace: String
        let endpoint: String
        let model: String
        let key: CacheKey
        let redisKey: String
        /// The ledger's prompt preview, read from the same body.
        let preview: String?
    }

    let capacity: Int
    let maxBodyBytes: Int
    private var entries: [Int: Entry] = [:]

    init(capacity: Int = 1024, maxBodyBytes: Int = 8 * 1024) {
        self.capacity = capacity
        self.maxBodyBytes = maxBodyBytes
    }

    var count: Int { entries.count }

    /// The slot `body` hashes to, and the entry there if it is this very request.
    func lookup(_ body: UnsafeRawBufferPointer, namespace: String, endpoint: String, model: String) -> (slot: Int, entry: Entry?) {
        var hasher = Hasher()
        hasher.combine(bytes: body)
        hasher.combine(namespace)
        hasher.combine(endpoint)
        hasher.combine(model)
        let slot = hasher.finalize()
        guard let entry = entries[slot], entry.body.count == body.count, entry.namespace == namespace,
              entry.endpoint == endpoint, entry.model == model,
              entry.body.withUnsafeBytes({ body.count == 0 || memcmp($0.baseAddress!, body.baseAddress!, body.count) == 0 })
        else { return (slot, nil) }
        return (slot, entry)
    }

    /// Remembers `entry` in `slot` (from `lookup`); a full memo forgets an arbitrary entry.
    func store(_ entry: Entry, slot: Int) {
        guard entry.body.count <= maxBodyBytes else { return }
        if entries[slot] == nil && entries.count >= capacity, let any = entries.keys.first {
            entries[any] = nil
        }
        entries[slot] = entry
    }
}
