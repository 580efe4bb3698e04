import Foundation
import Testing
import QRGateHTTP
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
