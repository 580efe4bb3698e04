import Foundation
import Logging
import Testing
import QRGateCore
import QRGateHTTP
import QRGateQR
@testable import QRGateServer
import QRGateTestSupport
@testable import QRGateUpstream

@Suite(.serialized) struct WebhookTests {
    /// A gateway receiving webhooks; its parsed events are collected.
    final class Receiver {
        let app: GatewayApp
        let port: Int
        let events = Collector<UpstreamEvent>()
        init() async throws {
            let config = try Config.load(fileContents: Data(#"{"upstream": {"mode": "evolution", "baseURL": "http://127.0.0.1:9", "apiKey": "global-key-123", "webhookSecret": "s3cret"}, "store": {"mode": "memory"}}"#.utf8), environment: [:])
            var logger = Logger(label: "wh")
            logger.logLevel = .warning
            let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            app = try await GatewayApp(config: config, host: "127.0.0.1", port: 0, staticDir: root.appendingPathComponent("static").path, logger: logger)
            let events = events
            // The gateway actor runs on the server's loop: start it first, then hop onto it.
            port = try app.start()
            await app.gateway.observeUpstreamEvents { events.append($0) }
        }
        deinit { app.stop() }

        func post(_ body: String, query: String = "?secret=s3cret") throws -> ClientResponse {
            try HTTPClient.perform(ClientRequest(method: "POST", url: "http://127.0.0.1:\(port)/webhooks/evolution\(query)",
                                                 headers: [("Content-Type", "application/json")], body: Array(body.utf8), timeoutSeconds: 5)).get()
        }
    }

    @Test func simulatorWebhooksAreParsedIntoTypedEvents() async throws {
        let rx = try await Receiver()
        let sim = try RunningSimulator(#"{"simulator": {"webhookURL": "http://127.0.0.1:\#(rx.port)/webhooks/evolution?secret=s3cret", "firstQrSeconds": 0.5, "nextQrSeconds": 0.3, "maxRefs": 2}}"#)
        let client = sim.client()
        _ = await client.createInstance("hooked")
        guard case let .qr(qr)? = await client.connect("hooked").success else { Issue.record("no QR"); return }
        // connecting, the first QR, a rotated QR, then the limit and close.
        // Webhooks arrive in order (the simulator sends one at a time): wait for the last one, the close.
        let done = await rx.events.waitAsync(seconds: 5) { $0.last?.kind == .state(.close, statusReason: 408) }
        #expect(done)
        let kinds = rx.events.all.map(\.kind)
        #expect(kinds.first == .state(.connecting, statusReason: 200))
        let codes = kinds.compactMap { if case let .qr(q) = $0 { q.code } else { nil } }
        #expect(codes.first == qr.code)
        #expect(codes.count == 2 && codes[0] != codes[1])
        #expect(kinds.suffix(2).first == .qrLimitReached("QR code limit reached, please login again"))
        #expect(rx.events.all.allSatisfy { $0.instance == "hooked" })
    }

    @Test func badOrUnauthenticatedBodiesChangeNothing() async throws {
        let rx = try await Receiver()
        let good = #"{"event":"connection.update","instance":"x1","data":{"instance":"x1","state":"open","statusReason":200},"apikey":"nope"}"#
        #expect(try rx.post(good, query: "").status == 401)
        #expect(try rx.post(good, query: "?secret=wrong").status == 401)
        #expect(try rx.post("not json").status == 400)
        #expect(try rx.post("[]").status == 400)
        #expect(try rx.post(#"{"instance":"x1","data":{}}"#).status == 400)
        #expect(try rx.post(#"{"event":"connection.update","instance":"x1","data":{"state":"sideways"}}"#).status == 400)
        #expect(try rx.post(#"{"event":"qrcode.updated","instance":"x1","data":{"qrcode":{"code":""}}}"#).status == 400)
        #expect(try rx.post(#"{"event":"qrcode.updated","instance":"../etc","data":{}}"#).status == 400)
        let r = try rx.post(#"{"event":"messages.upsert","instance":"x1","data":{}}"#)
        #expect(r.status == 200 && r.text.contains("ignored"))
        try await Task.sleep(for: .milliseconds(100))
        #expect(rx.events.all.isEmpty)
        // The global key in the envelope authenticates too; upper-case event names are Evolution's settings spelling.
        #expect(try rx.post(#"{"event":"CONNECTION_UPDATE","instance":"x1","data":{"state":"open"},"apikey":"global-key-123"}"#, query: "").status == 200)
        #expect(await rx.events.waitAsync(seconds: 2) { $0 == [UpstreamEvent(instance: "x1", kind: .state(.open, statusReason: nil))] })
    }
}

@Suite struct SimulatorWebhookBodyTests {
    /// A rotation's webhook is made when it goes out: it carries the code it was made for, with that code's
    /// picture (drawn then, so the gateway finds it in the shared cache), and reads as the gateway reads webhooks.
    /// An instance answering "count 0" tells of no QR by webhook either.
    @Test func aRotationsWebhookCarriesItsCodeAndPictureAndCountZeroSendsNone() throws {
        var config = Config().simulator
        config.firstQrSeconds = 60
        config.nextQrSeconds = 20
        config.maxRefs = 100
        config.webhookURL = "http://127.0.0.1:9/webhooks/evolution"
        let frames = QRFrameFactory(renderer: QRRenderer(style: QRStyle(correction: .medium, quietZone: 4, moduleSize: 4)))
        let sim = EvolutionSimulator(config: config, frames: frames)
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        func call(_ method: HTTPRequest.Method, _ path: String, _ body: String = "", at: Date = t0) {
            _ = sim.handle(HTTPRequest(method: method, path: path, headers: ["apikey": config.apiKey], body: Array(body.utf8)), now: at)
        }
        call(.post, "/instance/create", #"{"instanceName":"i0"}"#)
        call(.get, "/instance/connect/i0")
        _ = sim.advance(now: t0)
        let rotated = sim.advance(now: t0.addingTimeInterval(60)).filter { $0.pictureOf != nil }
        #expect(rotated.count == 1 && rotated.first?.instance == "i0")
        let code = try #require(sim.instances["i0"]?.code)
        let parsed = try EvolutionParsing.webhook(sim.body(of: try #require(rotated.first))).get()
        guard case let .qr(qr)? = parsed.event?.kind else { Issue.record("not a QR webhook: \(parsed)"); return }
        #expect(parsed.instance == "i0" && parsed.apikey == sim.token(of: "i0") && qr.code == code)
        let png = try #require(qr.base64?.dropFirst(QRFrameFactory.pngPrefix.count))
        #expect(try zbarDecode(Array(try #require(Data(base64Encoded: String(png))))) == code)
        #expect(frames.cached(UpstreamQR(code: code)) != nil)

        call(.post, "/simulator/faults", #"{"instance":"i0","countZero":true}"#)
        #expect(sim.advance(now: t0.addingTimeInterval(80)).allSatisfy { $0.pictureOf == nil })
    }
}
