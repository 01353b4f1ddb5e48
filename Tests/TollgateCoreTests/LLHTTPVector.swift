import TollgateCore

/// One request test vector of llhttp (see LLHTTPRequestVectors.swift) and what llhttp made of it.
struct LLHTTPVector {
    let name: String
    let input: String
    /// llhttp's own tests also feed this one split at every byte ("noScan" not set).
    let scan: Bool
    let expected: LLHTTPExpected

    var bytes: [UInt8] { Array(input.utf8) }
}

enum LLHTTPExpected {
    /// llhttp refused the first head (its error code and reason).
    case refused(code: Int, reason: String)
    /// llhttp accepted the first head.
    case accepted(LLHTTPHead)
    /// The input ends inside the first head.
    case incomplete
}

struct LLHTTPHead {
    /// llhttp_method_t: 1 GET, 2 HEAD, 3 POST, 4 PUT, 0 DELETE, 5 CONNECT, 6 OPTIONS, 7 TRACE, 28 PATCH.
    let method: Int
    let url: String
    let version: (Int, Int)
    let fields: [(String, String)]
    /// llhttp_flags: 0x1 keep-alive, 0x2 close, 0x4 connection upgrade, 0x8 chunked,
    /// 0x10 upgrade, 0x20 content-length, 0x200 transfer-encoding.
    let flags: Int
    let contentLength: Int
    /// Offset of the first byte after the head.
    let end: Int
    let body: LLHTTPBody
}

enum LLHTTPBody {
    /// The body's bytes; `end` is the offset after the message.
    case complete(String, end: Int)
    case failed(code: Int)
    case incomplete
}

extension RequestHead.Method {
    /// llhttp's number for the method (llhttp.h, enum llhttp_method).
    var llhttpNumber: Int {
        switch self {
        case .delete: 0
        case .get: 1
        case .head: 2
        case .post: 3
        case .put: 4
        case .connect: 5
        case .options: 6
        case .trace: 7
        case .patch: 28
        }
    }
}
