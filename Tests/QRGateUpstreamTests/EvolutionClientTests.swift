import Foundation
import Testing
import QRGateHTTP
import QRGateQR
@testable import QRGateUpstream

@Suite(.serialized) struct EvolutionClientTests {
    @Test func everyConnectShapeBecomesATypedResult() async throws {
        let sim = try RunningSimulator()
        let client = sim.client()
        let created = try #require(await client.createInstance("shop-1").success)
        #expect(created.name == "shop-1")
        #expect((created.token?.count ?? 0) >= 16)

        #expect(await client.connectionState("shop-1").success == .close)
        guard case let .qr(first)? = await client.connect("shop-1").success else { Issue.record("no QR"); return }
        #expect(first.code.hasPrefix("2@"))
        #expect(first.base64?.hasPrefix("data:image/png;base64,") == true)
        #expect(first.count == 1)
        #expect(await client.connectionState("shop-1").success == .connecting)
        // Asking again while the QR lives gives the same code.
        #expect(await client.connect("shop-1").success == .qr(first))

        try sim.post("/simulator/scan/shop-1")
        #expect(await client.connect("shop-1").success == .state(.open))
        #expect(await client.connectionState("shop-1").success == .open)
        #expect(await client.logout("shop-1").success != nil)
        #expect(await client.connectionState("shop-1").success == .close)

        try sim.post("/simulator/faults", #"{"instance":"shop-1","countZero":true}"#)
        #expect(await client.connect("shop-1").success == .noQRYet)
    }

    @Test func instanceTokenWorksWithoutTheGlobalKey() async throws {
        let sim = try RunningSimulator()
        let token = try #require(await sim.client().createInstance("own-key").success?.token)
        let noGlobal = sim.client(key: "")
        #expect(await noGlobal.connectionState("own-key", instanceToken: token).success == .close)
        #expect(await noGlobal.connectionState("own-key").failure == .noCredentials)
    }

    @Test func failuresAreTypedWithSafeReasons() async throws {
        let sim = try RunningSimulator()
        _ = await sim.client().createInstance("f1")
        #expect(await sim.client(key: "wrong-key").connect("f1").failure == .unauthorized)
        let missing = await sim.client().connect("ghost").failure
        #expect(missing == .instanceNotFound("ghost"))
        #expect(missing?.description == "The \"ghost\" instance does not exist")

        try sim.post("/simulator/faults", #"{"instance":"f1","errorRate":1}"#)
        #expect(await sim.client().connect("f1").failure == .server(status: 500))
        try sim.post("/simulator/faults", #"{"instance":"f1","garbage":true}"#)
        guard case .malformedBody? = await sim.client().connect("f1").failure else { Issue.record("garbage accepted"); return }
        try sim.post("/simulator/faults", #"{"instance":"f1","oversize":true}"#)
        #expect(await sim.client().connect("f1").failure == .bodyTooLarge(limit: 256 * 1024))
        try sim.post("/simulator/faults", #"{"instance":"f1","timeout":true}"#)
        #expect(await sim.client(timeout: 0.5).connect("f1").failure == .timeout(seconds: 0.5))

        let closed = try RunningSimulator()
        let port = closed.port
        closed.server.stop()
        let refused = EvolutionClient(baseURL: "http://127.0.0.1:\(port)", credentials: UpstreamCredentials(staticKey: "k", http: CurlMulti(maxConcurrent: 1)),
                                      http: CurlMulti(maxConcurrent: 1), timeoutSeconds: 2, maxResponseBytes: 1024)
        #expect(await refused.connect("f1").failure == .connectionRefused)
        // No failure reason carries the key.
        for e in [UpstreamError.unauthorized, .server(status: 500), .timeout(seconds: 1)] { #expect(!e.description.contains("qrgate-simulator-key")) }
    }

    @Test func oneHangingInstanceNeverDelaysTheOthers() async throws {
        let sim = try RunningSimulator()
        let setup = sim.client()
        for i in 0..<50 { _ = await setup.createInstance("c\(i)") }
        try sim.post("/simulator/faults", #"{"latencyMs":300}"#)
        try sim.post("/simulator/faults", #"{"instance":"c17","timeout":true}"#)
        // Per-instance faults replace the global ones for that instance only; keep the others slow.
        let client = sim.client(timeout: 2, concurrency: 32)
        let started = ContinuousClock.now
        let results = await withTaskGroup(of: (Int, Bool, Duration).self) { group in
            for i in 0..<50 {
                group.addTask {
                    let r = await client.connectionState("c\(i)")
                    return (i, r.success != nil, ContinuousClock.now - started)
                }
            }
            var all: [(Int, Bool, Duration)] = []
            for await r in group { all.append(r) }
            return all
        }
        let total = ContinuousClock.now - started
        let others = results.filter { $0.0 != 17 }
        let hung = try #require(results.first { $0.0 == 17 })
        #expect(others.allSatisfy { $0.1 })
        #expect(!hung.1)
        let slowest = others.map(\.2).max()!
        print("concurrency: 50 instances, upstream latency 300 ms, one hanging; others done in \(slowest), all (incl. 2 s timeout) in \(total)")
        #expect(slowest < .seconds(2)) // within one timeout
        #expect(total < .seconds(5))   // 50 × 300 ms one after another would be 15 s
    }
}
