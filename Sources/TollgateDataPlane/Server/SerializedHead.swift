import NIOCore
import NIOHTTP1

/// HTTP/1.1 heads written straight into a buffer, for what goes out past NIO's encoders: cache
/// hits, forwarded answers framed by their length, upstream requests, raw refusals. Names and
/// values come from NIO's parser or from the gateway itself, never with CR or LF.
extension ByteBuffer {
    /// `name: value` and CRLF.
    mutating func writeHeader(_ name: String, _ value: String) {
        writeString(name)
        writeStaticString(": ")
        writeString(value)
        writeStaticString("\r\n")
    }

    /// A response's status line, its headers (and `connection: close` when `close`), and the
    /// blank line that ends the head. The reason phrase is the standard one for the status.
    mutating func writeResponseHead(status: Int, headers: [(String, String)], close: Bool = false) {
        writeStaticString("HTTP/1.1 ")
        writeString(String(status))
        writeStaticString(" ")
        writeString(HTTPResponseStatus(statusCode: status).reasonPhrase)
        writeStaticString("\r\n")
        for (name, value) in headers { writeHeader(name, value) }
        if close { writeStaticString("connection: close\r\n") }
        writeStaticString("\r\n")
    }
}
