// The driver of scripts/bench-parser: compiled in one module with Sources/TollgateCore/HTTP.
#if LLHTTP
import CNIOLLHTTP
#endif

/// What the OpenAI Python SDK sends (httpx), as RequestHeadParserTests has it.
let sdkHeadText = ("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: gzip, deflate\r\n"
    + "Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
    + "User-Agent: OpenAI/Python 1.54.4\r\nX-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.54.4\r\n"
    + "X-Stainless-OS: Linux\r\nX-Stainless-Arch: x64\r\nX-Stainless-Runtime: CPython\r\n"
    + "X-Stainless-Runtime-Version: 3.12.3\r\nAuthorization: Bearer tg-eng-0123456789abcdef\r\n"
    + "x-stainless-retry-count: 0\r\nx-stainless-read-timeout: 600\r\nContent-Length: 93\r\n\r\n")
let sdkHead = Array(sdkHeadText.utf8)

/// The same head announcing a chunked body, and a 4 KiB body in three chunks with an extension.
let chunkedHead = Array(sdkHeadText.replacingOccurrences("Content-Length: 93", with: "Transfer-Encoding: chunked").utf8)
let chunkedBody: [UInt8] = {
    let part = [UInt8](repeating: UInt8(ascii: "x"), count: 1365)
    var body: [UInt8] = []
    for _ in 0..<3 { body += Array("555\r\n".utf8) + part + Array("\r\n".utf8) }
    return body + Array("0;done\r\n\r\n".utf8)
}()
let chunkedMessage = chunkedHead + chunkedBody

/// What vLLM (uvicorn) answers a streamed completion with, as ResponseHeadParserTests has it.
let vllmHead = Array(("HTTP/1.1 200 OK\r\ndate: Thu, 03 Dec 2026 18:00:00 GMT\r\nserver: uvicorn\r\n"
    + "content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n").utf8)

extension String {
    func replacingOccurrences(_ target: String, with replacement: String) -> String {
        guard let range = range(of: target) else { return self }
        return self[..<range.lowerBound] + replacement + self[range.upperBound...]
    }

    func range(of target: String) -> Range<String.Index>? {
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(target) { return i..<index(i, offsetBy: target.count) }
            i = index(after: i)
        }
        return nil
    }
}

@inline(never)
func measure(_ name: String, bytes: Int, iterations: Int, _ run: () -> Int) {
    var sink = 0
    for _ in 0..<max(iterations / 10, 1) { sink &+= run() }
    let clock = ContinuousClock()
    let start = clock.now
    for _ in 0..<iterations { sink &+= run() }
    let elapsed = clock.now - start
    let ns = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
    let perRun = ns / Double(iterations)
    let column = name.padding(to: 44)
    print("\(column) \(format(perRun)) ns   \(format(Double(bytes) / perRun)) bytes/ns   (\(sink & 1))")
}

func format(_ x: Double) -> String {
    let rounded = (x * 100).rounded() / 100
    let s = String(rounded)
    return String(repeating: " ", count: max(0, 9 - s.count)) + s
}

extension String {
    func padding(to n: Int) -> String { self + String(repeating: " ", count: max(0, n - count)) }
}

@main
struct Bench {
    static func main() {
        let arguments = CommandLine.arguments
        let iterations = arguments.count > 1 ? Int(arguments[1]) ?? 1_000_000 : 1_000_000
        print("\(sdkHead.count)-byte OpenAI SDK head, 16 fields; the same with a \(chunkedBody.count)-byte chunked body; \(iterations) runs (a quarter for bodies)")

        var parser = RequestHeadParser()
        sdkHead.withUnsafeBytes { head in
            measure("RequestHeadParser, whole head", bytes: head.count, iterations: iterations) {
                (try? parser.parse(head))??.length ?? 0
            }
            let half = UnsafeRawBufferPointer(rebasing: head[0..<(head.count / 2)])
            measure("RequestHeadParser, head in two reads", bytes: head.count, iterations: iterations) {
                _ = try? parser.parse(half)
                return (try? parser.parse(head))??.length ?? 0
            }
        }
        var responses = ResponseHeadParser()
        vllmHead.withUnsafeBytes { head in
            measure("ResponseHeadParser, vLLM answer head", bytes: head.count, iterations: iterations) {
                (try? responses.parse(head))??.length ?? 0
            }
        }
        chunkedMessage.withUnsafeBytes { message in
            measure("head, then ChunkedBodyDecoder: 3 chunks", bytes: message.count, iterations: iterations / 4) {
                guard let head = (try? parser.parse(message)) ?? nil else { return 0 }
                let body = UnsafeRawBufferPointer(rebasing: message[head.length...])
                var decoder = ChunkedBodyDecoder(limits: .init(maxBodyBytes: 1 << 20))
                var offset = 0
                var data = 0
                while let event = try? decoder.next(body, from: &offset) {
                    switch event {
                    case .data(let range): data &+= range.count
                    case .needMore, .end: return data
                    }
                }
                return data
            }
        }
        #if LLHTTP
        benchLLHTTP(iterations: iterations)
        #endif
    }
}

#if LLHTTP
/// llhttp with NIO's callbacks' shape (spans reported, nothing copied), on the same bytes.
func benchLLHTTP(iterations: Int) {
    var settings = llhttp_settings_t()
    c_nio_llhttp_settings_init(&settings)
    settings.on_header_field = { _, _, _ in 0 }
    settings.on_header_value = { _, _, _ in 0 }
    settings.on_url = { _, _, _ in 0 }
    settings.on_headers_complete = { _ in 0 }
    settings.on_body = { _, _, _ in 0 }
    settings.on_message_complete = { _ in 0 }
    var parser = llhttp_t()
    withUnsafeMutablePointer(to: &settings) { settings in
        sdkHead.withUnsafeBytes { head in
            let p = head.baseAddress!.assumingMemoryBound(to: CChar.self)
            measure("llhttp (NIO's, -O2), whole head", bytes: head.count, iterations: iterations) {
                c_nio_llhttp_init(&parser, HTTP_REQUEST, settings)
                return Int(c_nio_llhttp_execute(&parser, p, head.count).rawValue)
            }
        }
        vllmHead.withUnsafeBytes { head in
            let p = head.baseAddress!.assumingMemoryBound(to: CChar.self)
            measure("llhttp (NIO's, -O2), vLLM answer head", bytes: head.count, iterations: iterations) {
                c_nio_llhttp_init(&parser, HTTP_RESPONSE, settings)
                return Int(c_nio_llhttp_execute(&parser, p, head.count).rawValue)
            }
        }
        chunkedMessage.withUnsafeBytes { all in
            let p = all.baseAddress!.assumingMemoryBound(to: CChar.self)
            measure("llhttp (NIO's, -O2), head and 3 chunks", bytes: all.count, iterations: iterations / 4) {
                c_nio_llhttp_init(&parser, HTTP_REQUEST, settings)
                return Int(c_nio_llhttp_execute(&parser, p, all.count).rawValue)
            }
        }
    }
}
#endif
