import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import QRGateQR
import QRGateTestSupport

@Suite struct QRRendererTests {
    let renderer = QRRenderer(style: QRStyle(correction: .medium, quietZone: 4, moduleSize: 4))

    @Test(arguments: ["hello", "2@y8Xp0cQ1nK9LmZ,4fG7H2jKs9dQwErTyUiOp==,Zm9vYmFy,YmF6cXV4", "ünïcødé ✓ QR", String(repeating: "A1b2", count: 200)])
    func pngDecodesBackToTheText(_ text: String) throws {
        let png = try renderer.png(text)
        #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        #expect(try zbarDecode(png) == text)
    }

    @Test func dataURLCarriesThePNG() throws {
        let r = try renderer.render("data url")
        #expect(r.pngDataURL.hasPrefix("data:image/png;base64,"))
        let b64 = String(r.pngDataURL.dropFirst("data:image/png;base64,".count))
        let png = try #require(Data(base64Encoded: b64))
        #expect(try zbarDecode(Array(png)) == "data url")
    }

    @Test func svgIsWellFormedAndSquare() throws {
        let svg = try renderer.svg("square?")
        let doc = try XMLDocument(xmlString: svg)
        let root = try #require(doc.rootElement())
        #expect(root.name == "svg")
        func attr(_ name: String) -> String? { root.attributes?.first { $0.name == name }?.stringValue }
        let w = attr("width"), h = attr("height")
        #expect(w != nil && w == h)
        let box = try #require(attr("viewBox")).split(separator: " ")
        #expect(box.count == 4 && box[2] == box[3])
        let m = try QRMatrix(encoding: "square?", correction: .medium)
        #expect(Int(box[2]) == m.width + 8) // quiet zone of 4 on each side
    }

    @Test func quietZoneAndModuleSizeShapeThePNG() throws {
        let m = try QRMatrix(encoding: "size", correction: .low)
        let r = QRRenderer(style: QRStyle(correction: .low, quietZone: 2, moduleSize: 3))
        let png = try r.png(m)
        // IHDR width sits at bytes 16..<20, big-endian.
        let width = png[16..<20].reduce(0) { $0 << 8 | Int($1) }
        #expect(width == (m.width + 4) * 3)
    }

    /// One bit per pixel, grayscale: an eighth of the bytes to deflate of an 8-bit image, no palette needed.
    @Test func pngIsOneBitGray() throws {
        let png = try renderer.png("bits")
        #expect(png[24] == 1) // IHDR bit depth
        #expect(png[25] == 0) // IHDR colour type: grayscale
        #expect(png[28] == 0) // not interlaced
        #expect(!png.indices.dropLast(4).contains { Array(png[$0..<$0 + 4]) == Array("PLTE".utf8) })
    }

    /// Rows whose pixels do not fill their last byte (the padding bits) and every module size the config allows
    /// in practice: each picture still reads back with zbar.
    @Test(arguments: [(1, 2), (2, 3), (3, 5), (4, 6), (0, 7)])
    func pngDecodesAtOtherSizes(quietZone: Int, moduleSize: Int) throws {
        let text = "2@Zm9vYmFy,YmF6cXV4=,\(quietZone)x\(moduleSize)"
        let r = QRRenderer(style: QRStyle(correction: .medium, quietZone: quietZone, moduleSize: moduleSize))
        let m = try QRMatrix(encoding: text, correction: .medium)
        let png = try r.png(m)
        #expect(png[16..<20].reduce(0) { $0 << 8 | Int($1) } == (m.width + 2 * quietZone) * moduleSize)
        if quietZone > 0 { #expect(try zbarDecode(png) == text) } // zbar needs a quiet zone to find a code
    }

    @Test func refusesWhatCannotBeEncoded() {
        #expect(throws: QREncodingError.empty) { try renderer.png("") }
        #expect(throws: QREncodingError.tooLong(bytes: 3000, limit: 2331)) { try renderer.png(String(repeating: "x", count: 3000)) }
        #expect(throws: QREncodingError.containsNUL) { try renderer.png("a\u{0}b") }
    }
}
