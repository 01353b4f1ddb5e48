import TollgateCore
import XCTest

final class KeyDigestTests: XCTestCase {
    /// FIPS 180-2's vectors, through every way a key reaches the digest.
    func testKnownVectorsFromArraysStringsAndSlices() {
        XCTAssertEqual(KeyDigest.hex(of: "abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(KeyDigest.hex(of: ""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        let header = "Bearer  tg-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg"
        let slice = header.utf8.dropFirst(7).drop { $0 == UInt8(ascii: " ") }  // as the gateway reads it
        let key = "tg-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg"
        XCTAssertEqual(KeyDigest(hashing: slice), KeyDigest(hashing: Array(key.utf8)))
        XCTAssertEqual(KeyDigest(hashing: slice).hex, KeyDigest.hex(of: key))
        XCTAssertEqual(KeyDigest(hashing: AnySequence(key.utf8)), KeyDigest(hashing: key.utf8))  // not contiguous
        XCTAssertEqual(KeyDigest(hex: KeyDigest.hex(of: key)), KeyDigest(hashing: key.utf8))
    }
}
