import Foundation
import Testing
import QRGateQR
@testable import QRGateUpstream

@Suite(.serialized) struct QRFrameTests {
    let factory = QRFrameFactory(renderer: QRRenderer(style: QRStyle(correction: .medium, quietZone: 4, moduleSize: 4)))

    @Test func simulatorCodeRendersToAQRThatDecodesBack() async throws {
        let sim = try RunningSimulator()
        let client = sim.client()
        _ = await client.createInstance("scan-me")
        guard case let .qr(qr)? = await client.connect("scan-me").success else { Issue.record("no QR"); return }
        let frame = try factory.frame(for: UpstreamQR(code: qr.code))
        #expect(!frame.upstreamImage)
        let png = try #require(Data(base64Encoded: String(frame.pngDataURL.dropFirst(QRFrameFactory.pngPrefix.count))))
        #expect(try zbarDecode(Array(png)) == qr.code)
        // The simulator's own image decodes to the same code and is kept as is.
        let upstream = try factory.frame(for: UpstreamQR(code: qr.code + "x", base64: qr.base64))
        #expect(upstream.upstreamImage)
        let upPNG = try #require(Data(base64Encoded: String(qr.base64!.dropFirst(QRFrameFactory.pngPrefix.count))))
        #expect(try zbarDecode(Array(upPNG)) == qr.code)
    }

    @Test func brokenUpstreamImagesAreReplacedByOurs() throws {
        for bad in ["data:image/png;base64,!!!", "data:image/jpeg;base64,/9j/4AAQ", "data:image/png;base64," + Data("GIF89a....".utf8).base64EncodedString(),
                    "data:image/png;base64," + String(repeating: "A", count: 300_000)] {
            let f = try factory.frame(for: UpstreamQR(code: "code-\(bad.count)", base64: bad))
            #expect(!f.upstreamImage)
            #expect(f.pngDataURL.hasPrefix(QRFrameFactory.pngPrefix))
        }
    }

    @Test func sameCodeIsTheSameFrame() throws {
        let a = try factory.frame(for: UpstreamQR(code: "2@same"))
        let b = try factory.frame(for: UpstreamQR(code: "2@same"))
        #expect(a == b)
        #expect(try factory.frame(for: UpstreamQR(code: "2@other")) != a)
    }

    /// Pictures are cached by code; the pairing code each answer (poll or webhook) carries rides on the frame.
    @Test func eachAnswersPairingCodeRidesOnTheCachedPictures() throws {
        let first = try factory.frame(for: UpstreamQR(code: "2@paired", pairingCode: "wzyeh1yy"))
        #expect(first.pairingCode == "WZYE-H1YY")
        let again = try #require(factory.cached(UpstreamQR(code: "2@paired", pairingCode: "ABCD1234")))
        #expect(again.pairingCode == "ABCD-1234" && again.svg == first.svg)
        #expect(factory.cached(UpstreamQR(code: "2@paired"))?.pairingCode == nil)
        #expect(factory.cached(UpstreamQR(code: "2@paired", pairingCode: "<img src=x>"))?.pairingCode == nil)
    }
}

/// Pictures drawn when first wanted, counted by the factory.
@Suite struct QRFrameLazinessTests {
    @Test func aFrameIsCheckedNowAndDrawnOnlyForWhatIsRead() throws {
        let factory = QRFrameFactory(renderer: QRRenderer(style: QRStyle(correction: .medium, quietZone: 4, moduleSize: 4)))
        func drawn() -> (Int, Int) { (factory.drawn.svg.load(ordering: .relaxed), factory.drawn.png.load(ordering: .relaxed)) }
        let code = "2@" + String(repeating: "lazy", count: 40)
        let f = try factory.frame(for: UpstreamQR(code: code))
        #expect(drawn() == (0, 0) && f.hasPictures && !f.pictures.has(.svg))
        #expect(f.svg.hasPrefix("<svg") && drawn() == (1, 0))
        // The cache hands out the same pictures: read again, nothing is drawn again.
        let again = try factory.frame(for: UpstreamQR(code: code, pairingCode: "ABCD-EFGH"))
        #expect(again.svg == f.svg && again.pairingCode == "ABCD-EFGH" && drawn() == (1, 0))
        let png = try #require(Data(base64Encoded: String(again.pngDataURL.dropFirst(QRFrameFactory.pngPrefix.count))))
        #expect(try zbarDecode(Array(png)) == code)
        #expect(drawn() == (1, 1))
        // Drawn ahead for a watcher's formats (what the runtime does off the loop).
        let other = try factory.frame(for: UpstreamQR(code: code + "2"), drawing: .svg)
        #expect(other.pictures.has(.svg) && !other.pictures.has(.png) && drawn() == (2, 1))
        // An upstream's PNG is kept as sent: only the SVG is ever drawn for it.
        let up = try factory.frame(for: UpstreamQR(code: code + "3", base64: again.pngDataURL), drawing: .standard)
        #expect(up.upstreamImage && up.pngDataURL == again.pngDataURL && drawn() == (3, 1))
        // A code no QR can hold fails when it arrives, not when someone first looks.
        #expect(throws: QREncodingError.self) { try factory.frame(for: UpstreamQR(code: String(repeating: "x", count: 2_332))) }
        #expect(throws: QREncodingError.self) { try factory.frame(for: UpstreamQR(code: "")) }
        #expect(throws: QREncodingError.self) { try factory.frame(for: UpstreamQR(code: "a\u{0}b")) }
        _ = try factory.frame(for: UpstreamQR(code: String(repeating: "x", count: 2_331)))
    }
}
