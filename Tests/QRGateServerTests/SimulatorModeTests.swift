import Foundation
import Testing
import QRGateHTTP
import QRGateCore
import QRGateQR
import QRGateUpstream
@testable import QRGateServer

@Suite(.serialized) struct SimulatorModeTests {
    @Test func simulatorEndpointsShareTheGatewayPortInSimulatorModeOnly() async throws {
        let s = try await TestServer() // embedded default: upstream.mode = simulator
        let created = try HTTPClient.perform(ClientRequest(method: "POST", url: s.base + "/instance/create", headers: [("apikey", "qrgate-simulator-key")],
                                                           body: Array(#"{"instanceName":"demo-1"}"#.utf8))).get()
        #expect(created.status == 201)
        let state = try HTTPClient.perform(ClientRequest(url: s.base + "/instance/connectionState/demo-1", headers: [("apikey", "qrgate-simulator-key")])).get()
        #expect(state.text.contains(#""state":"close""#))
        #expect(try s.get("/simulator/state").status == 200)

        let evo = try await TestServer(configJSON: #"{"upstream": {"mode": "evolution", "baseURL": "http://127.0.0.1:9", "apiKey": "k-123"}}"#)
        #expect(try evo.get("/simulator/state").status == 404)
        #expect(try evo.get("/instance/connectionState/demo-1").status == 404)
    }
}

@Suite struct SimulatorCostTests {
    /// Rotations and requests cost O(1) each, counted: a rotation takes one deadline off the heap whatever the
    /// number of instances, and a request or a tick with nothing due takes none (no walk over the instances).
    @Test(arguments: [10, 1000])
    func rotationsCostOneDeadlineEachWhateverTheFleet(_ n: Int) throws {
        var config = Config().simulator
        config.firstQrSeconds = 60
        config.nextQrSeconds = 20
        config.maxRefs = 100
        let sim = EvolutionSimulator(config: config, frames: QRFrameFactory(renderer: QRRenderer(style: QRStyle(correction: .medium, quietZone: 4, moduleSize: 2))))
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        func call(_ method: HTTPRequest.Method, _ path: String, _ body: String = "", at: Date) {
            _ = sim.handle(HTTPRequest(method: method, path: path, headers: ["apikey": config.apiKey], body: Array(body.utf8)), now: at)
        }
        for i in 0..<n {
            call(.post, "/instance/create", #"{"instanceName":"i\#(i)"}"#, at: t0)
            call(.get, "/instance/connect/i\(i)", at: t0)
        }
        #expect(sim.deadlinesVisited == 0)
        // Requests and ticks while nothing is due: no work however many instances there are.
        for _ in 0..<100 { call(.get, "/instance/connectionState/i0", at: t0.addingTimeInterval(30)) }
        _ = sim.advance(now: t0.addingTimeInterval(59))
        #expect(sim.deadlinesVisited == 0)
        // Every instance rotates once at 60 s, and three more times by 120 s: one deadline per rotation.
        _ = sim.advance(now: t0.addingTimeInterval(60))
        #expect(sim.deadlinesVisited == n)
        _ = sim.advance(now: t0.addingTimeInterval(120))
        #expect(sim.deadlinesVisited == 4 * n)
        // A rotation draws nothing: pictures wait for an answer or a webhook that needs them.
        #expect(sim.instances["i0"]?.png == "")
    }

    /// Codes are shaped like WhatsApp's and tokens like Evolution's, and every letter of each alphabet turns up
    /// (codes and tokens come from six random bits per character, ten per draw of the system's generator).
    @Test func codesAndTokensUseTheirWholeAlphabets() throws {
        let sim = EvolutionSimulator(config: Config().simulator, frames: QRFrameFactory(renderer: QRRenderer(style: QRStyle())))
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        var codes: [String] = [], tokens: [String] = []
        for i in 0..<60 {
            _ = sim.handle(HTTPRequest(method: .post, path: "/instance/create", headers: ["apikey": sim.config.apiKey],
                                       body: Array(#"{"instanceName":"t\#(i)"}"#.utf8)), now: t0)
            _ = sim.handle(HTTPRequest(method: .get, path: "/instance/connect/t\(i)", headers: ["apikey": sim.config.apiKey]), now: t0)
            codes.append(try #require(sim.instances["t\(i)"]?.code))
            tokens.append(try #require(sim.token(of: "t\(i)")))
        }
        let base64 = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        for code in codes {
            let parts = code.dropFirst(2).split(separator: ",", omittingEmptySubsequences: false)
            #expect(code.hasPrefix("2@") && parts.map(\.count) == [64, 44, 44, 24], "\(code)")
            #expect(parts.allSatisfy { $0.allSatisfy { base64.contains($0) || $0 == "=" } })
        }
        #expect(Set(codes.joined().filter { base64.contains($0) }) == base64)
        #expect(Set(codes).count == codes.count && Set(tokens).count == tokens.count)
        #expect(tokens.allSatisfy { $0.count == 32 })
        #expect(Set(tokens.joined()) == Set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    }
}
