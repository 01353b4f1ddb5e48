import NIOCore
import NIOHTTP1
import TollgateCore

/// Who is calling: the department and, for a key from the ledger, its prefix.
struct Caller {
    var department: Int
    var keyPrefix: String?
}

/// The OpenAI endpoints the gateway forwards.
enum APIEndpoint {
    case chatCompletions, completions, embeddings

    /// As the ledger's `endpoint` column names it.
    var name: String {
        switch self {
        case .chatCompletions: "chat"
        case .completions: "completions"
        case .embeddings: "embeddings"
        }
    }
}

/// One request to forward, as it walks forward through the steps: made when its head is
/// authenticated (`Auth`), its body added as it arrives, then admitted (`Admission`), looked up
/// (`Cache`) and forwarded (`Forward`). Every step reads it; none sends its parts back.
struct GatewayRequest {
    /// The snapshot the request started with: its department index, limits and routing stay
    /// consistent even if a reload swaps the table meanwhile.
    var state: GatewayState
    var head: ClientHead
    var requestID: String
    var caller: Caller
    var endpoint: APIEndpoint
    var body: ByteBuffer
    var started: NIODeadline

    var departmentName: String { state.table.departments[caller.department].name }

    /// Adds a part of the body that fits within `limit`. A body that arrives whole in one read
    /// (the usual case) is kept as the slice it came in, not copied.
    mutating func appendBody(_ chunk: inout ByteBuffer, limit: Int, allocator: ByteBufferAllocator) {
        if body.readableBytes == 0 && chunk.readableBytes == head.contentLength {
            body = chunk
            return
        }
        if body.capacity == 0 { body = allocator.buffer(capacity: min(max(head.contentLength ?? 0, 256), limit)) }
        body.writeBuffer(&chunk)
    }
}

/// A request that passed admission: what the gateway read of its body, where it goes, and what
/// was reserved for it (settled when it ends, in `LoopContext.end`).
struct AdmittedRequest {
    var request: GatewayRequest
    var summary: RequestSummary
    var model: String
    var pool: Int
    var reservation: QuotaBook.Reservation
}
