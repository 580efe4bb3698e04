import Foundation
import Testing
@testable import QRGateCore

/// A node following sessions another node runs (`SessionRegistry.follow`), and one that stops running a
/// session (`forgetUnstored`): same seqs and frames on every node, nothing unstored ever shown.
@Suite struct ClusterFollowTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    let rules = SessionRules(ttlSeconds: 30, maxAttempts: 3)
    func json(_ b: [UInt8]) -> [String: Any] { (try? JSONSerialization.jsonObject(with: Data(b))) as? [String: Any] ?? [:] }
    func picture(_ code: String) -> SessionQR { SessionQR(code: code, pngDataURL: "data:image/png;base64,\(code)", svg: "<svg>\(code)</svg>") }

    /// The owner's registry, publishing once stored like the PostgreSQL store makes it, and what it stores.
    func owner() -> (SessionRegistry, RegistryAndHubTests.RecordingTransport) {
        let hub = Hub(), transport = RegistryAndHubTests.RecordingTransport()
        hub.transport = transport
        return (SessionRegistry(rules: rules, hub: hub, logCapacity: 16), transport)
    }

    func stored(_ reg: SessionRegistry, _ id: String, after: Int) -> (StoredSession, [StoredEvent]) {
        let s = reg[id]!
        let events = s.log.entries(after: after).map { StoredEvent(sessionId: id, seq: $0.seq, action: $0.action, payload: reg.atRest($0, of: id), at: t0) }
        var session = reg.stored(id)!
        // At rest a QR is its code: the follower draws the pictures again.
        if let qr = session.state.qr { session.state.qr = SessionQR(code: qr.code, pngDataURL: "", svg: "") }
        return (session, events)
    }

    @Test func aFollowerPublishesTheOwnersEventsWithTheSameSeqsAndFrames() throws {
        let (a, sentA) = owner()
        a.create(id: "s", instanceName: "s", now: t0)
        a.hub.subscribe(1, to: "s")
        _ = a.apply(.start, to: "s", now: t0)
        _ = a.apply(.upstreamQR(picture("A")), to: "s", now: t0)

        let hub = Hub(), sentB = RegistryAndHubTests.RecordingTransport()
        hub.transport = sentB
        let b = SessionRegistry(rules: rules, hub: hub, logCapacity: 16)
        hub.subscribe(7, to: Hub.everySession)
        var drawn: [String] = []
        let pictures: SessionRegistry.Pictures = { code, _, _ in drawn.append(code); return picture(code) }
        let (s1, e1) = stored(a, "s", after: 0)
        #expect(b.follow(s1, events: e1, now: t0, pictures: pictures))
        // A refresh and a new QR on the owner, then the next read.
        _ = a.refresh("s", now: t0.addingTimeInterval(1))
        _ = a.apply(.answer(.upstreamQR(picture("B")), generation: a["s"]!.machine.generation), to: "s", now: t0.addingTimeInterval(1))
        let (s2, e2) = stored(a, "s", after: 1)
        #expect(!b.follow(s2, events: e2, now: t0.addingTimeInterval(1), pictures: pictures))

        #expect(sentA.sent.map { json($0.bytes)["seq"] as? Int } == sentB.sent.map { json($0.bytes)["seq"] as? Int })
        #expect(sentA.sent.map(\.bytes) == sentB.sent.map(\.bytes))
        #expect(sentB.sent.map { json($0.bytes)["action"] as? String } == ["qr_generated", "qr_regenerating", "qr_generated"])
        #expect(sentB.sent.map(\.key) == ["qr:s", nil, "qr:s"])
        // The follower's state and snapshot are the owner's.
        #expect(b["s"]?.seq == 3 && b["s"]?.machine.qr?.code == "B" && b["s"]?.machine.status == .pending)
        let snapA = json(try #require(a.snapshot(session: "s", now: t0.addingTimeInterval(2))))
        let snapB = json(try #require(b.snapshot(session: "s", now: t0.addingTimeInterval(2))))
        #expect(snapA["seq"] as? Int == snapB["seq"] as? Int && snapA["qrCode"] as? String == snapB["qrCode"] as? String)
        // `since` is served from the follower's log, as on the owner.
        #expect(b.replay(session: "s", since: 1)?.map { json($0)["seq"] as? Int } == [2, 3])
        // Reading the same events again publishes nothing.
        let before = sentB.sent.count
        b.follow(s2, events: e2, now: t0.addingTimeInterval(2), pictures: pictures)
        #expect(sentB.sent.count == before)
        #expect(drawn.contains("B"))
    }

    @Test func aGapInTheStoredEventsRestartsTheLogSoOldSinceGetsASnapshot() {
        let (a, _) = owner()
        a.create(id: "s", instanceName: "s", now: t0)
        _ = a.apply(.start, to: "s", now: t0)
        _ = a.apply(.upstreamQR(picture("A")), to: "s", now: t0)
        let b = SessionRegistry(rules: rules, hub: Hub(), logCapacity: 16)
        let (s1, e1) = stored(a, "s", after: 0)
        b.follow(s1, events: e1, now: t0, pictures: { c, _, _ in picture(c) })
        _ = a.refresh("s", now: t0.addingTimeInterval(1))
        _ = a.apply(.answer(.upstreamQR(picture("B")), generation: a["s"]!.machine.generation), to: "s", now: t0.addingTimeInterval(1))
        // The store dropped seq 2 (superseded) before this node read: only seq 3 comes.
        let (s3, e3) = stored(a, "s", after: 2)
        b.follow(s3, events: e3, now: t0.addingTimeInterval(1), pictures: { c, _, _ in picture(c) })
        #expect(b["s"]?.seq == 3)
        #expect(b.replay(session: "s", since: 1) == nil) // a snapshot, not a replay with a hole
        #expect(b.replay(session: "s", since: 2)?.count == 1)
    }

    @Test func storedEventsDecodeBackToTheirEvents() {
        let at = Date(timeIntervalSince1970: 1_800_000_000.123)
        let events: [SessionEvent] = [
            .qrGenerated(picture("C"), expiresAt: at.addingTimeInterval(30), attempt: 1),
            .pairingCode("ABCD-EFGH", expiresAt: at.addingTimeInterval(30), attempt: 1),
            .qrExpired(attempt: 1), .qrRegenerating(attempt: 2, message: "m"), .connected(message: "ok", at: at),
            .error("e"), .upstreamError("u"), .disconnected,
        ]
        for e in events {
            let bytes = SessionEventEncoding.event(e, session: "s", seq: 4, now: at, maxAttempts: 3, numberId: nil, formats: .code)
            let back = SessionEventEncoding.decode(bytes) { code, _ in picture(code) }
            #expect(back?.event == e && abs((back?.at.timeIntervalSince(at) ?? 9)) < 0.001, "\(e)")
        }
        #expect(SessionEventEncoding.decode(Array("{\"action\":\"future_kind\",\"timestamp\":1}".utf8)) { _, _ in nil } == nil)
        #expect(SessionEventEncoding.decode(Array("not json".utf8)) { _, _ in nil } == nil)
    }

    @Test func aNodeThatStopsRunningASessionForgetsWhatItNeverStored() {
        let (a, sent) = owner()
        a.holdsUntilStored = true
        a.create(id: "s", instanceName: "s", now: t0)
        a.hub.subscribe(1, to: "s")
        _ = a.apply(.start, to: "s", now: t0)
        _ = a.apply(.upstreamQR(picture("A")), to: "s", now: t0)
        a.release("s", through: 1)
        _ = a.refresh("s", now: t0.addingTimeInterval(1)) // seq 2, held: never stored
        #expect(a["s"]?.seq == 2 && a.isHolding("s"))
        a.forgetUnstored("s", after: 1)
        #expect(a["s"]?.seq == 1 && !a.isHolding("s") && a["s"]?.machine.qr?.code == "A")
        #expect(a["s"]?.log.entries(after: 0).map(\.seq) == [1])
        #expect(sent.sent.map { json($0.bytes)["seq"] as? Int } == [1])
    }
}
