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

extension ByteBuffer {
    /// `value` in decimal ASCII, without making a `String` of it (status codes, lengths and
    /// quota figures of every answer's head).
    mutating func writeDecimal(_ value: Int) {
        if value < 0 {
            writeInteger(UInt8(ascii: "-"))
            // The magnitude of Int.min does not fit an Int: written from its unsigned form.
            return writeDecimal(magnitude: value.magnitude)
        }
        writeDecimal(magnitude: UInt(value))
    }

    private mutating func writeDecimal(magnitude value: UInt) {
        if value < 10 {
            writeInteger(UInt8(ascii: "0") &+ UInt8(value))
            return
        }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: UInt.max has 20 digits
        let count = withUnsafeMutableBytes(of: &digits) { out -> Int in
            var rest = value
            var at = out.count
            while rest > 0 {
                at -= 1
                out[at] = UInt8(ascii: "0") &+ UInt8(rest % 10)
                rest /= 10
            }
            return out.count - at
        }
        withUnsafeBytes(of: &digits) { writeBytes(UnsafeRawBufferPointer(rebasing: $0[($0.count - count)...])) }
    }

    /// `name: value` and CRLF, the value in decimal.
    mutating func writeHeader(_ name: StaticString, decimal value: Int) {
        writeStaticString(name)
        writeStaticString(": ")
        writeDecimal(value)
        writeStaticString("\r\n")
    }
}
