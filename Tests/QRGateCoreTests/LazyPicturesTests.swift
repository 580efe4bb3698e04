import Foundation
import Synchronization
import Testing
@testable import QRGateCore

/// A QR's pictures and its standard frame are made when someone wants them, not for every rotation.
@Suite struct LazyPicturesTests {
    final class RecordingTransport: HubTransport {
        var sent: [(bytes: [UInt8], to: [UInt64])] = []
        func send(_ bytes: [UInt8], to subscribers: [UInt64], coalesceKey: String?) { sent.append((bytes, subscribers.sorted())) }
    }

    /// Pictures of `code` that count what they draw, by kind.
    final class Drawings: Sendable {
        let svg = Atomic<Int>(0), png = Atomic<Int>(0)
        var counts: (svg: Int, png: Int) { (svg.load(ordering: .relaxed), png.load(ordering: .relaxed)) }
        func qr(_ code: String) -> SessionQR {
            SessionQR(code: code, pictures: QRPictures { [self] formats in
                if formats.contains(.svg) { svg.add(1, ordering: .relaxed) }
                if formats.contains(.png) { png.add(1, ordering: .relaxed) }
                return (formats.contains(.svg) ? "<svg>\(code)</svg>" : nil, formats.contains(.png) ? "data:image/png;base64,\(code)" : nil)
            })
        }
    }

    let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    func json(_ b: [UInt8]) -> [String: Any] { (try? JSONSerialization.jsonObject(with: Data(b))) as? [String: Any] ?? [:] }

    @Test func picturesAreDrawnOnceEachWhenFirstReadAndNeverByComparing() {
        let d = Drawings()
        let a = d.qr("A"), b = d.qr("A")
        #expect(a == b && a != d.qr("B"))
        #expect(a.hasPictures)
        #expect(d.counts == (0, 0))
        #expect(a.svg == "<svg>A</svg>")
        #expect(d.counts == (1, 0))
        #expect(a.svg == "<svg>A</svg>" && a.pictures.has(.svg) && !a.pictures.has(.png))
        #expect(d.counts == (1, 0))
        a.pictures.prepare(.standard)
        #expect(d.counts == (1, 1) && a.pngDataURL == "data:image/png;base64,A")
        // Pictures given outright are compared as given; a QR read back without them has none.
        #expect(SessionQR(code: "A", pngDataURL: "p", svg: "s") != SessionQR(code: "A", pngDataURL: "p", svg: "t"))
        #expect(!SessionQR(code: "A", pngDataURL: "", svg: "").hasPictures)
    }

    @Test func theHubWantsThePicturesItsWatchersAskedFor() {
        let hub = Hub()
        #expect(hub.picturesWanted("s") == [])
        hub.subscribe(1, to: Hub.everySession, formats: .code)
        #expect(hub.picturesWanted("s") == [])
        hub.subscribe(2, to: "s", formats: .svg)
        #expect(hub.picturesWanted("s") == .svg && hub.picturesWanted("t") == [])
        hub.subscribe(3, prefix: "t", formats: [.code, .png])
        #expect(hub.picturesWanted("t1") == .png)
        hub.subscribe(4, to: "s")
        #expect(hub.picturesWanted("s") == .standard)
        final class Watcher: HubConsumer {
            func published(_ publication: Publication) {}
            func sessionAdded(_ session: String) {}
            func watches(_ session: String) -> Bool { session == "u" }
            var listsWatchedSessions: Bool { true }
            func forEachWatchedSession(_ body: (String) -> Void) { body("u") }
        }
        hub.add(consumer: Watcher())
        #expect(hub.picturesWanted("u") == .standard && hub.picturesWanted("v") == [])
    }

    @Test func aRotationNobodyWatchesDrawsNothingAndAReplayDrawsWhatItCarries() throws {
        let hub = Hub(), transport = RecordingTransport(), d = Drawings()
        hub.transport = transport
        let reg = SessionRegistry(rules: SessionRules(ttlSeconds: 30, maxAttempts: 3), hub: hub, logCapacity: 8)
        reg.create(id: "s", instanceName: "s", now: t0)
        _ = reg.apply(.start, to: "s", now: t0)
        for (i, code) in ["A", "B", "C"].enumerated() {
            _ = reg.apply(.upstreamQR(d.qr(code)), to: "s", now: t0.addingTimeInterval(Double(i)))
        }
        #expect(reg["s"]?.seq == 3 && transport.sent.isEmpty)
        #expect(d.counts == (0, 0))
        // What the store keeps is the code: still nothing drawn.
        let entry = try #require(reg["s"]?.log.entries(after: 0).last)
        #expect(json(reg.atRest(entry, of: "s"))["qrText"] as? String == "C")
        #expect(d.counts == (0, 0))
        // A page's subscriber catching up gets the SVG it asked for (drawn now), not the PNG.
        let page = try #require(reg.replay(session: "s", since: 2, formats: .svg))
        #expect(page.count == 1 && json(page[0])["qrSvg"] as? String == "<svg>C</svg>" && json(page[0])["qrCode"] == nil)
        #expect(d.counts == (1, 0))
        // A default subscriber's replay draws the PNG; the standard frame is encoded once and kept.
        let std = try #require(reg.replay(session: "s", since: 2))
        #expect(json(std[0])["qrCode"] as? String == "data:image/png;base64,C" && json(std[0])["seq"] as? Int == 3)
        #expect(try #require(reg.replay(session: "s", since: 2)) == std)
        #expect(d.counts == (1, 1))
        // A watched session's new code is encoded for its subscriber at once.
        hub.subscribe(9, to: "s", formats: .svg)
        _ = reg.apply(.upstreamQR(d.qr("D")), to: "s", now: t0.addingTimeInterval(5))
        #expect(transport.sent.count == 1 && json(transport.sent[0].bytes)["qrSvg"] as? String == "<svg>D</svg>")
        #expect(d.counts == (2, 1))
    }

    @Test func anUnencodedQRFrameWeighsAsAFullOneInTheLogsByteBound() {
        var log = EventLog(capacity: 100, maxBytes: EventLog.unencodedQRWeight + 1_000)
        for seq in 1...5 { log.append(EventLog.Entry(seq: seq, action: "x", bytes: [UInt8](repeating: 1, count: 400))) }
        #expect(log.bytes == 2_000)
        log.append(EventLog.Entry(seq: 6, action: "qr_generated", frame: EncodedFrame { [UInt8](repeating: 2, count: 50) }))
        // 12 KiB for the QR leaves room for two of the 400-byte events before it.
        #expect(log.entries(after: 0).map(\.seq) == [4, 5, 6])
        #expect(log.bytes == 800 + EventLog.unencodedQRWeight)
        #expect(log.entries(after: 5).first?.bytes.count == 50)
    }
}
