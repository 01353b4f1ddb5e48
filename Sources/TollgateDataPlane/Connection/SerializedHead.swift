import NIOCore
import NIOHTTP1

/// HTTP/1.1 header lines written straight into a buffer, for every head the gateway sends:
/// answers (`ResponseWriter`) and upstream requests. Names and values come from the gateway's parsers
/// or from the gateway itself, never with CR or LF.
extension ByteBuffer {
    /// `name: value` and CRLF.
    mutating func writeHeader(_ name: String, _ value: String) {
        writeString(name)
        writeStaticString(": ")
        writeString(value)
        writeStaticString("\r\n")
    }
}
