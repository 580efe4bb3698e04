import Foundation
import Testing
import QRGateHTTP
@testable import QRGateUpstream

@Suite(.serialized) struct CredentialTests {
    @Test func tokenIsCachedAndRenewedFiveMinutesBeforeExpiry() async throws {
        let sim = try RunningSimulator(#"{"simulator": {"tokenTTLSeconds": 3600}}"#)
        let clock = ManualClock()
        let creds = UpstreamCredentials(staticKey: "", tokenURL: sim.base + "/oauth/token", clientId: "qrgate", clientSecret: "qrgate-simulator-secret",
                                        http: CurlMulti(maxConcurrent: 2), now: { clock.now })
        let first = try #require(await creds.key())
        #expect(first.hasPrefix("sim_"))
        #expect(await creds.status().state == .valid)
        #expect(await creds.status().expiresAt == clock.now.addingTimeInterval(3600))
        clock.advance(3600 - 301)
        #expect(await creds.key() == first) // still outside the margin
        clock.advance(2)
        #expect(await creds.status().state == .expiring)
        let second = try #require(await creds.key())
        #expect(second != first)
        #expect(await creds.status().state == .valid)
        let described = String(describing: await creds.status())
        #expect(!described.contains(second) && !described.contains(first))
    }

    @Test func unauthorizedRenewsOnceAndRetries() async throws {
        let sim = try RunningSimulator()
        _ = await sim.client().createInstance("renew")
        let client = sim.client(key: "", tokenURL: sim.base + "/oauth/token")
        #expect(await client.connectionState("renew").success == .close)
        let before = await client.credentials.key()
        try sim.post("/simulator/expire-tokens")
        // The cached token is now refused: 401 → renew → retry succeeds.
        #expect(await client.connectionState("renew").success == .close)
        #expect(await client.credentials.key() != before)
    }

    @Test func renewalDownFallsBackToTheStaticKey() async throws {
        let sim = try RunningSimulator()
        _ = await sim.client().createInstance("fb")
        try sim.post("/simulator/faults", #"{"tokenEndpointDown":true}"#)
        let client = sim.client(key: "qrgate-simulator-key", tokenURL: sim.base + "/oauth/token")
        #expect(await client.connectionState("fb").success == .close)
        let status = await client.credentials.status()
        #expect(status.state == .fallback)
        #expect(status.lastError?.contains("503") == true)
        #expect(!String(describing: status).contains("qrgate-simulator-key"))

        let none = sim.client(key: "", tokenURL: sim.base + "/oauth/token")
        #expect(await none.connectionState("fb").failure == .noCredentials)
        #expect(await none.credentials.status().state == .missing)
    }
}
