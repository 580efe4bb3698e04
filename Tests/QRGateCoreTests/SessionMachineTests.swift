import Foundation
import Testing
@testable import QRGateCore

@Suite struct SessionMachineTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    /// Expiry at once (`expiryCheckSeconds` 0): the last look at expiry has tests of its own.
    let rules = SessionRules(ttlSeconds: 10, maxAttempts: 2, countdownIntervalSeconds: 1, pollIntervalSeconds: 5, refreshMinIntervalSeconds: 3,
                             backoffMaxSeconds: 20, expiryCheckSeconds: 0)
    func qr(_ c: String) -> SessionQR { SessionQR(code: c, pngDataURL: "data:image/png;base64,\(c)", svg: "<svg>\(c)</svg>") }
    func at(_ s: Double) -> Date { t0.addingTimeInterval(s) }

    func started() -> SessionMachine {
        var m = SessionMachine(rules: rules)
        _ = m.handle(.start, now: t0)
        _ = m.handle(.upstreamQR(qr("A")), now: t0)
        return m
    }

    @Test func startFetchesAndTheFirstQRIsAttemptZero() {
        var m = SessionMachine(rules: rules)
        let s = m.handle(.start, now: t0)
        #expect(s.commands == [.fetchQR] && s.events.isEmpty && m.status == .pending)
        let q = m.handle(.upstreamQR(qr("A")), now: t0)
        #expect(q.events == [.qrGenerated(qr("A"), expiresAt: at(10), attempt: 0)])
        #expect(m.qrExpiresAt == at(10))
    }

    @Test func rotationPushesANewFrameWithoutAnAttemptAndDuplicatesAreDropped() {
        var m = started()
        #expect(m.handle(.upstreamQR(qr("A")), now: at(2)).events.isEmpty)
        let r = m.handle(.upstreamQR(qr("B")), now: at(3))
        #expect(r.events == [.qrGenerated(qr("B"), expiresAt: at(13), attempt: 0)])
        #expect(m.attempt == 0)
    }

    @Test func aQRByWebhookPutsTheNextPollOffAndSilenceBringsPollingBack() {
        let r = SessionRules(ttlSeconds: 60, maxAttempts: 2, pollIntervalSeconds: 5, pollAfterWebhookSeconds: 25)
        var m = SessionMachine(rules: r)
        _ = m.handle(.start, now: t0)
        _ = m.handle(.answer(.upstreamQR(qr("A")), generation: m.generation), now: t0)
        #expect(m.nextPollAt == at(5))
        // A rotation by webhook is shown at once, and the next poll waits 25 s instead of 5.
        let pushed = m.handle(.pushed(.upstreamQR(qr("B"))), now: at(2))
        #expect(pushed.events == [.qrGenerated(qr("B"), expiresAt: at(62), attempt: 0)])
        #expect(m.nextDeadline() == at(27))
        #expect(m.handle(.tick, now: at(10)).commands.isEmpty)
        // An answer meanwhile (the refresh cycle's) is fresh news too, but does not bring the poll back closer.
        _ = m.handle(.answer(.upstreamQR(qr("B")), generation: m.generation), now: at(11))
        #expect(m.nextDeadline() == at(27))
        // The same code again by webhook still counts as news that the upstream tells.
        _ = m.handle(.pushed(.upstreamQR(qr("B"))), now: at(20))
        #expect(m.nextDeadline() == at(45))
        // No webhook for 25 s: the poll comes, and after its answer polls are 5 s apart again.
        #expect(m.handle(.tick, now: at(45)).commands == [.fetchQR])
        _ = m.handle(.answer(.upstreamQR(qr("C")), generation: m.generation), now: at(45.1))
        #expect(m.nextDeadline() == at(50.1))
        // Other news by webhook (a state) counts as fresh news, a poll interval, not the webhook stretch;
        // and a stretch shorter than the poll interval never brings a poll closer.
        _ = m.handle(.pushed(.upstreamState(.connecting)), now: at(46))
        #expect(m.nextDeadline() == at(51))
        var short = SessionMachine(rules: SessionRules(ttlSeconds: 60, pollIntervalSeconds: 5, pollAfterWebhookSeconds: 1))
        _ = short.handle(.start, now: t0)
        _ = short.handle(.answer(.upstreamNoQR, generation: short.generation), now: t0)
        _ = short.handle(.pushed(.upstreamQR(qr("A"))), now: at(1))
        #expect(short.nextDeadline() == at(6))
    }

    @Test func theMachineMakesNoCountdownsAndSleepsUntilItHasWork() {
        var m = started()
        // Countdowns are computed from qrExpiresAt for watched sessions (the registry), not events of the machine.
        for t in [0.5, 1, 1.2, 4.5] { #expect(m.handle(.tick, now: at(t)).events.isEmpty) }
        #expect(m.remaining(at: at(1.2)) == 9 && m.remaining(at: at(9.01)) == 1)
        // Its next wake-up is the next poll or the expiry, not every second.
        #expect(m.nextDeadline() == at(5))
    }

    @Test func expiryRegeneratesUntilTheLastAttemptThenFails() {
        var m = started()
        let e1 = m.handle(.tick, now: at(10))
        #expect(e1.events == [.qrExpired(attempt: 0), .qrRegenerating(attempt: 1, message: "Generating a new QR code (attempt 1/2)")])
        #expect(e1.commands == [.logoutThenFetch])
        // A regenerated QR counts as new even if the code repeats.
        #expect(m.handle(.upstreamQR(qr("A")), now: at(11)).events == [.qrGenerated(qr("A"), expiresAt: at(21), attempt: 1)])
        let e2 = m.handle(.tick, now: at(21))
        #expect(e2.events.map(\.action) == ["qr_expired", "qr_regenerating"])
        _ = m.handle(.upstreamQR(qr("C")), now: at(22))
        let e3 = m.handle(.tick, now: at(32))
        #expect(e3.events == [.qrExpired(attempt: 2), .error("QR code generation failed after 2 attempts. Please request a new validation.")])
        #expect(e3.commands == [.logout])
        #expect(m.status == .failed)
        #expect(m.handle(.tick, now: at(40)).events.isEmpty)
    }

    /// The default rules' last look: at expiry the upstream is asked for its code once more.
    func looking() -> SessionMachine {
        var m = SessionMachine(rules: SessionRules(ttlSeconds: 10, maxAttempts: 2, pollIntervalSeconds: 5, pollAfterWebhookSeconds: 25, expiryCheckSeconds: 3))
        _ = m.handle(.start, now: t0)
        _ = m.handle(.answer(.upstreamQR(qr("A")), generation: m.generation), now: t0)
        _ = m.handle(.pushed(.upstreamQR(qr("A"))), now: t0) // webhooks: no poll before the expiry
        return m
    }

    @Test func atExpiryARotationTheUpstreamJustMadeIsShownInsteadOfRegenerating() {
        var m = looking()
        #expect(m.nextDeadline() == at(10))
        let look = m.handle(.tick, now: at(10))
        #expect(look.events.isEmpty && look.commands == [.fetchQR])
        #expect(m.qr?.code == "A" && m.nextDeadline() == at(13)) // the answer is waited for 3 s
        let rotated = m.handle(.answer(.upstreamQR(qr("B")), generation: m.generation), now: at(10.2))
        #expect(rotated.events == [.qrGenerated(qr("B"), expiresAt: at(20.2), attempt: 0)])
        #expect(rotated.commands.isEmpty && m.attempt == 0 && m.status == .pending)
    }

    @Test func atExpiryTheSameCodeNoneOrAFailureExpiresAtOnce() {
        for answer in [SessionInput.upstreamQR(qr("A")), .upstreamNoQR, .upstreamState(.connecting), .upstreamFailed("upstream failed with HTTP 502")] {
            var m = looking()
            _ = m.handle(.tick, now: at(10))
            let r = m.handle(.answer(answer, generation: m.generation), now: at(10.3))
            #expect(r.events.filter { $0.action != "upstream_error" } == [.qrExpired(attempt: 0), .qrRegenerating(attempt: 1, message: "Generating a new QR code (attempt 1/2)")],
                    "\(answer)")
            #expect(r.commands == [.logoutThenFetch] && m.qr == nil && m.attempt == 1, "\(answer)")
        }
    }

    @Test func atExpiryAnUpstreamThatDoesNotAnswerInTimeExpiresAllTheSame() {
        var m = looking()
        let look = m.handle(.tick, now: at(10))
        let generation = m.generation
        #expect(look.commands == [.fetchQR])
        #expect(m.handle(.tick, now: at(12.9)).events.isEmpty)
        let late = m.handle(.tick, now: at(13))
        #expect(late.events.map(\.action) == ["qr_expired", "qr_regenerating"] && late.commands == [.logoutThenFetch])
        // The look's answer, when it finally comes, belongs to the expired round.
        #expect(m.handle(.answer(.upstreamQR(qr("B")), generation: generation), now: at(14)).events.isEmpty)
        #expect(m.qr == nil && m.attempt == 1)
        // A poll that was already out at expiry is waited for the same 3 s, not for ever.
        var p = SessionMachine(rules: SessionRules(ttlSeconds: 10, maxAttempts: 2, pollIntervalSeconds: 5, expiryCheckSeconds: 3))
        _ = p.handle(.start, now: t0)
        _ = p.handle(.answer(.upstreamQR(qr("A")), generation: p.generation), now: t0)
        #expect(p.handle(.tick, now: at(9)).commands == [.fetchQR]) // an ordinary poll, just before expiry
        #expect(p.nextDeadline() == at(13))
        #expect(p.handle(.tick, now: at(13)).events.map(\.action) == ["qr_expired", "qr_regenerating"])
    }

    @Test func atExpiryAWebhookRotationDuringTheLookIsTheRotation() {
        var m = looking()
        _ = m.handle(.tick, now: at(10))
        let pushed = m.handle(.pushed(.upstreamQR(qr("B"))), now: at(10.1))
        #expect(pushed.events == [.qrGenerated(qr("B"), expiresAt: at(20.1), attempt: 0)])
        // The look's answer brings the same new code: nothing more to tell.
        let answer = m.handle(.answer(.upstreamQR(qr("B")), generation: m.generation), now: at(10.2))
        #expect(answer.events.isEmpty && answer.commands.isEmpty && m.attempt == 0)
    }

    @Test func atExpiryAnUpstreamThatHasBeenFailingIsNotAskedAgain() {
        var m = looking()
        _ = m.handle(.upstreamFailed("upstream failed with HTTP 500"), now: at(6))
        let r = m.handle(.tick, now: at(10))
        #expect(r.events.map(\.action) == ["qr_expired", "qr_regenerating"] && r.commands == [.logoutThenFetch])
    }

    @Test func aLateWebhookOfTheCodeARefreshOrExpiryRetiredIsNotTheNewQR() {
        // The upstream's webhook for code A was sent just before the refresh's logout and arrives after it.
        var m = started()
        _ = m.refresh(now: at(1))
        let late = m.handle(.pushed(.upstreamQR(qr("A"))), now: at(1.1))
        #expect(late.events.isEmpty && m.qr == nil && m.inFlight)
        // The refresh's own fetch brings the new round's code; A arriving after that is no rotation either.
        #expect(m.handle(.answer(.upstreamQR(qr("B")), generation: m.generation), now: at(1.2)).events.map(\.action) == ["qr_generated"])
        #expect(m.handle(.pushed(.upstreamQR(qr("A"))), now: at(1.3)).events.isEmpty && m.qr?.code == "B")
        // The same after an expiry (B retired), while a poll answer may still bring a code back (a failed logout).
        _ = m.handle(.tick, now: at(11.2))
        #expect(m.handle(.pushed(.upstreamQR(qr("B"))), now: at(11.3)).events.isEmpty)
        #expect(m.handle(.answer(.upstreamQR(qr("B")), generation: m.generation), now: at(11.4)).events == [.qrGenerated(qr("B"), expiresAt: at(21.4), attempt: 1)])
    }

    @Test func openConnectsAndResetsAttempts() {
        var m = started()
        _ = m.handle(.tick, now: at(10))
        #expect(m.attempt == 1)
        let c = m.handle(.upstreamState(.open), now: at(11))
        #expect(c.events == [.connected(message: SessionMachine.connectedMessage, at: at(11))])
        #expect(m.status == .connected && m.attempt == 0 && m.qr == nil)
        #expect(m.handle(.upstreamState(.close), now: at(50)).events == [.disconnected])
    }

    @Test func adminRefreshWhenConnectedRateLimitedAndAfterFailure() {
        var m = started()
        _ = m.handle(.upstreamState(.open), now: at(1))
        #expect(m.refresh(now: at(2)).outcome == .alreadyConnected)

        var f = started()
        _ = f.handle(.tick, now: at(10)); _ = f.handle(.upstreamQR(qr("B")), now: at(10))
        _ = f.handle(.tick, now: at(20)); _ = f.handle(.upstreamQR(qr("C")), now: at(20))
        _ = f.handle(.tick, now: at(30))
        #expect(f.status == .failed)
        let r = f.refresh(now: at(31))
        #expect(r.outcome == .accepted && r.commands == [.logoutThenFetch])
        #expect(f.status == .pending && f.attempt == 0)
        #expect(f.refresh(now: at(32)).outcome == .rateLimited(retryAfterSeconds: 2))
        #expect(f.refresh(now: at(34)).outcome == .accepted)
        #expect(f.handle(.upstreamQR(qr("C")), now: at(35)).events == [.qrGenerated(qr("C"), expiresAt: at(45), attempt: 0)])
    }

    @Test func failingUpstreamBacksOffExponentiallyAndCapped() {
        var m = SessionMachine(rules: rules)
        _ = m.handle(.start, now: t0)
        var now = t0
        var delays: [Double] = []
        for _ in 0..<5 {
            let r = m.handle(.upstreamFailed("upstream failed with HTTP 500"), now: now)
            #expect(r.events == [.upstreamError("upstream failed with HTTP 500")])
            let retry = m.retryAt!
            delays.append(retry.timeIntervalSince(now))
            #expect(m.handle(.tick, now: retry.addingTimeInterval(-0.1)).commands.isEmpty)
            now = retry
            #expect(m.handle(.tick, now: now).commands == [.fetchQR])
        }
        #expect(delays == [5, 10, 20, 20, 20])
        _ = m.handle(.upstreamQR(qr("A")), now: now)
        #expect(m.consecutiveFailures == 0 && m.retryAt == nil)
    }

    @Test func pollsEveryIntervalUnlessFresherNewsArrived() {
        var m = started()
        #expect(m.handle(.tick, now: at(5)).commands == [.fetchQR])
        #expect(m.handle(.tick, now: at(6)).commands.isEmpty) // in flight
        _ = m.handle(.upstreamNoQR, now: at(6))
        _ = m.handle(.upstreamQR(qr("B")), now: at(9)) // a webhook
        #expect(m.handle(.tick, now: at(11)).commands.isEmpty)
        #expect(m.handle(.tick, now: at(14)).commands == [.fetchQR])
    }

    @Test func upstreamCloseWhilePendingCountsAsExpiry() {
        var m = started()
        let r = m.handle(.upstreamState(.close), now: at(3))
        #expect(r.events.map(\.action) == ["qr_expired", "qr_regenerating"])
    }

    @Test func aLinkedSessionIsCheckedSoAnUnlinkIsNoticed() {
        var m = started()
        _ = m.handle(.upstreamState(.open), now: at(1))
        #expect(m.nextDeadline() == at(31)) // connectedCheckSeconds defaults to 30
        #expect(m.handle(.tick, now: at(30)).commands.isEmpty)
        #expect(m.handle(.tick, now: at(31)).commands == [.checkState])
        #expect(m.handle(.tick, now: at(32)).commands.isEmpty) // in flight
        #expect(m.handle(.upstreamState(.close), now: at(33)).events == [.disconnected])
    }

    @Test func aRefreshTellsEverySubscriberTheQRIsGoing() {
        var m = started()
        let r = m.refresh(now: at(1))
        #expect(r.events == [.qrRegenerating(attempt: 0, message: SessionMachine.refreshMessage)])
        #expect(m.qr == nil)
    }

    @Test func anUpstreamErrorIsForgottenWhenTheUpstreamAnswersAgain() {
        var m = started()
        _ = m.handle(.upstreamFailed("upstream failed with HTTP 500"), now: at(1))
        #expect(m.lastError == "upstream failed with HTTP 500")
        _ = m.handle(.upstreamNoQR, now: at(7))
        #expect(m.lastError == nil)
    }

    @Test func oneAttemptIsSingular() {
        var m = SessionMachine(rules: SessionRules(ttlSeconds: 10, maxAttempts: 1, expiryCheckSeconds: 0))
        _ = m.handle(.start, now: t0); _ = m.handle(.upstreamQR(qr("A")), now: t0)
        _ = m.handle(.tick, now: at(10)); _ = m.handle(.upstreamQR(qr("B")), now: at(10))
        #expect(m.handle(.tick, now: at(20)).events.last == .error("QR code generation failed after 1 attempt. Please request a new validation."))
    }

    @Test func aCloseWebhookIsCheckedBeforeItExpiresTheQR() {
        // A refresh's logout says `close` by webhook; it can come after the new QR. Asked again, the upstream
        // shows the new attempt: the QR stays. A real end (the refs ran out) is confirmed and expires it.
        var m = started()
        let hint = m.handle(.upstreamEndHint, now: at(1))
        #expect(hint.events.isEmpty && hint.commands == [.checkState])
        let stale = m.handle(.answer(.upstreamState(.connecting), generation: m.generation), now: at(1))
        #expect(stale.events.isEmpty && m.qr != nil && m.status == .pending)
        _ = m.handle(.upstreamEndHint, now: at(2))
        let real = m.handle(.answer(.upstreamState(.close), generation: m.generation), now: at(2))
        #expect(real.events.first == .qrExpired(attempt: 0) && m.qr == nil)
        // With a poll out, the hint waits for its answer instead of asking twice.
        var busy = SessionMachine(rules: rules)
        _ = busy.handle(.start, now: t0) // its fetch is out
        #expect(busy.handle(.upstreamEndHint, now: at(1)).commands.isEmpty)
    }

    @Test func aWebhookQRDoesNotTakeTheRefreshsCommandForAnswered() {
        // Seen end to end: a refresh while the first fetch was still out. The first fetch's webhook QR came in
        // while the refresh's logout ran; then the logout's own `close` webhook. Taken as the command's answer,
        // the QR had ended the command, so the hint asked for the state, saw `close` and expired the new QR
        // (attempt 1 spent on nothing).
        var m = SessionMachine(rules: rules)
        _ = m.handle(.start, now: t0) // fetch out, generation 1
        let r = m.refresh(now: at(0.1))
        #expect(r.outcome == .accepted && r.commands == [.logoutThenFetch])
        let pushed = m.handle(.pushed(.upstreamQR(qr("A"))), now: at(0.2))
        #expect(pushed.events == [.qrGenerated(qr("A"), expiresAt: at(10.2), attempt: 0)] && m.inFlight)
        let hint = m.handle(.upstreamEndHint, now: at(0.3))
        #expect(hint.commands.isEmpty && hint.events.isEmpty)
        #expect(m.nextDeadline() == nil, "nothing is due while the refresh's command is out")
        // Its answer ends it: a new code is a rotation at the same attempt.
        let answered = m.handle(.answer(.upstreamQR(qr("B")), generation: m.generation), now: at(0.4))
        #expect(answered.events == [.qrGenerated(qr("B"), expiresAt: at(10.4), attempt: 0)] && !m.inFlight && m.attempt == 0)
        // A stale answer (the first fetch's, of generation 1) neither counts nor ends anything.
        #expect(m.handle(.answer(.upstreamState(.close), generation: 1), now: at(0.5)).events.isEmpty && m.qr == qr("B"))
        // A webhook that starts a new round (a `close` confirmed, then the expiry's logout-and-fetch) is in flight
        // for that round, not the old one.
        _ = m.handle(.upstreamEndHint, now: at(1))
        let ended = m.handle(.answer(.upstreamState(.close), generation: m.generation), now: at(1))
        #expect(ended.events.first == .qrExpired(attempt: 0) && ended.commands == [.logoutThenFetch] && m.inFlight)
    }

    @Test func disconnectLogsOutAndClears() {
        var m = started()
        let d = m.handle(.disconnect, now: at(1))
        #expect(d.events == [.disconnected] && d.commands == [.logout])
        #expect(m.qr == nil && m.qrExpiresAt == nil && m.status == .disconnected)
    }
}

@Suite struct RegistryAndHubTests {
    final class RecordingTransport: HubTransport {
        var sent: [(bytes: [UInt8], to: [UInt64], key: String?)] = []
        func send(_ bytes: [UInt8], to subscribers: [UInt64], coalesceKey: String?) { sent.append((bytes, subscribers.sorted(), coalesceKey)) }
    }
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func json(_ b: [UInt8]) -> [String: Any] { (try? JSONSerialization.jsonObject(with: Data(b))) as? [String: Any] ?? [:] }

    @Test func eventsAreNumberedEncodedOnceAndFannedOutToSessionAndStarSubscribers() {
        let hub = Hub(), transport = RecordingTransport()
        hub.transport = transport
        let reg = SessionRegistry(rules: SessionRules(ttlSeconds: 2, maxAttempts: 2), hub: hub, logCapacity: 8)
        reg.create(id: "s1", instanceName: "s1", instanceToken: "secret-token", now: t0)
        hub.subscribe(1, to: "s1"); hub.subscribe(2, to: "s1"); hub.subscribe(3, to: Hub.everySession); hub.subscribe(4, to: "other")
        _ = reg.apply(.start, to: "s1", now: t0)
        _ = reg.apply(.upstreamQR(SessionQR(code: "A", pngDataURL: "data:image/png;base64,AA", svg: "<svg/>")), to: "s1", now: t0)
        _ = reg.apply(.tick, to: "s1", now: t0.addingTimeInterval(1))
        #expect(reg.tickCountdowns(now: t0.addingTimeInterval(1)) == 1)
        #expect(transport.sent.count == 2)
        #expect(transport.sent.allSatisfy { $0.to == [1, 2, 3] })
        let first = json(transport.sent[0].bytes)
        #expect(first["action"] as? String == "qr_generated" && first["seq"] as? Int == 1 && first["sessionId"] as? String == "s1")
        #expect(first["qrCode"] as? String == "data:image/png;base64,AA" && first["maxAttempts"] as? Int == 2)
        let tick = json(transport.sent[1].bytes)
        #expect(tick["action"] as? String == "countdown" && tick["remaining"] as? Int == 1 && tick["seq"] == nil)
        #expect(transport.sent[0].key == "qr:s1")
        #expect(transport.sent[1].key == "countdown:s1")
        // Not numbered, not logged: the next event is seq 2, and a replay holds no countdown.
        #expect(reg["s1"]?.seq == 1 && reg["s1"]?.log.entries(after: 0).map(\.action) == ["qr_generated"])
        #expect(!transport.sent.contains { String(decoding: $0.bytes, as: UTF8.self).contains("secret-token") })
    }

    @Test func countdownsOnlyForSessionsSomeoneWatchesAndAfterAReplay() throws {
        let hub = Hub(), transport = RecordingTransport()
        hub.transport = transport
        let reg = SessionRegistry(rules: SessionRules(ttlSeconds: 30, maxAttempts: 2), hub: hub, logCapacity: 8)
        for id in ["watched", "alone", "shop-1"] {
            reg.create(id: id, instanceName: id, now: t0)
            _ = reg.apply(.start, to: id, now: t0)
            _ = reg.apply(.upstreamQR(SessionQR(code: id, pngDataURL: "data:image/png;base64,AA", svg: "<svg/>")), to: id, now: t0)
        }
        hub.subscribe(1, to: "watched"); hub.subscribe(2, prefix: "shop-")
        transport.sent.removeAll()
        #expect(reg.tickCountdowns(now: t0.addingTimeInterval(2.5)) == 2)
        #expect(Set(transport.sent.map { json($0.bytes)["sessionId"] as? String }) == ["watched", "shop-1"])
        // A client back with `since` gets what it missed, then the time left now.
        let frames = reg.welcome(session: "alone", since: 0, now: t0.addingTimeInterval(2.5))
        #expect(frames.map { json($0)["action"] as? String } == ["qr_generated", "countdown"])
        #expect(json(frames[1])["remaining"] as? Int == 28)
        let snap = json(try #require(reg.snapshot(session: "alone", now: t0.addingTimeInterval(2.5))))
        #expect(snap["remaining"] as? Int == 28)
    }

    @Test func aFleetsCountdownsAreSpreadOverTheIntervalEachSessionOncePerInterval() {
        let hub = Hub(), transport = RecordingTransport()
        hub.transport = transport
        let reg = SessionRegistry(rules: SessionRules(ttlSeconds: 30, maxAttempts: 2, countdownIntervalSeconds: 1), hub: hub, logCapacity: 8)
        for i in 0..<100 {
            let id = "s\(i)", at = t0.addingTimeInterval(Double(i) / 100 + 0.005) // expiries spread over the second
            reg.create(id: id, instanceName: id, now: at)
            _ = reg.apply(.start, to: id, now: at)
            _ = reg.apply(.upstreamQR(SessionQR(code: id, pngDataURL: "p", svg: "s")), to: id, now: at)
            hub.subscribe(UInt64(i), to: id)
        }
        transport.sent.removeAll()
        var perCall: [Int] = [], last = t0.addingTimeInterval(10)
        for k in 1...20 {
            let now = t0.addingTimeInterval(10 + Double(k) * 0.05)
            perCall.append(reg.tickCountdowns(now: now, since: last))
            last = now
        }
        // 20 calls over one interval: every session once, about five per call, never all at once.
        #expect(perCall.reduce(0, +) == 100 && perCall.max()! <= 6, "\(perCall)")
        #expect(Set(transport.sent.map { json($0.bytes)["sessionId"] as? String }).count == 100)
        // Each on its own whole second: 20 s left, not 19.something rounded up from a burst.
        #expect(transport.sent.allSatisfy { json($0.bytes)["remaining"] as? Int == 20 })
        // A late call catches up on the slots it missed.
        #expect(reg.tickCountdowns(now: t0.addingTimeInterval(12), since: t0.addingTimeInterval(11.5)) == 50)
    }

    /// A tick looks only at the sessions whose expiry falls in its window (the wheel's buckets), so a fleet's
    /// countdowns cost each session one look per interval, not one per tick; nobody watching: no wake at all.
    @Test func countdownTicksLookOnlyAtTheSessionsTheirWindowCovers() {
        let hub = Hub(), transport = RecordingTransport()
        hub.transport = transport
        let reg = SessionRegistry(rules: SessionRules(ttlSeconds: 30, maxAttempts: 2, countdownIntervalSeconds: 1), hub: hub, logCapacity: 8)
        let n = 5_000
        for i in 0..<n {
            let id = "s\(i)", at = t0.addingTimeInterval(Double(i) / Double(n) + 0.0001)
            reg.create(id: id, instanceName: id, now: at)
            _ = reg.apply(.start, to: id, now: at)
            _ = reg.apply(.upstreamQR(SessionQR(code: id, pngDataURL: "p", svg: "s")), to: id, now: at)
        }
        #expect(reg.nextCountdown(after: t0.addingTimeInterval(5)) == nil)
        hub.subscribe(1, to: Hub.everySession)
        let visits = reg.countdownVisits
        var last = t0.addingTimeInterval(10), ticked = 0
        for k in 1...100 {
            let now = t0.addingTimeInterval(10 + Double(k) * 0.01)
            ticked += reg.tickCountdowns(now: now, since: last)
            last = now
        }
        // Every session once in the interval; each looked at by the ticks whose window touches its bucket (a
        // bucket is 20 ms, a tick 10 ms: three), not by all hundred.
        #expect(ticked == n)
        #expect(reg.countdownVisits - visits <= 3 * n + n / 10, "\(reg.countdownVisits - visits) looks for \(n) sessions")
        // The next wake is the next session's whole second (they are 0.2 ms apart here).
        let now = t0.addingTimeInterval(11.0031)
        let next = reg.nextCountdown(after: now)!
        #expect(next > now && next.timeIntervalSince(now) <= 0.0002 + 1e-6)
        // A session that moves to another phase (a new QR) is found there, and only there.
        _ = reg.apply(.upstreamQR(SessionQR(code: "new", pngDataURL: "p", svg: "s")), to: "s0", now: t0.addingTimeInterval(11.5))
        transport.sent.removeAll()
        #expect(reg.tickCountdowns(now: t0.addingTimeInterval(12.51), since: t0.addingTimeInterval(12.49)) >= 1)
        #expect(transport.sent.contains { json($0.bytes)["sessionId"] as? String == "s0" })
        transport.sent.removeAll()
        _ = reg.tickCountdowns(now: t0.addingTimeInterval(13.0002), since: t0.addingTimeInterval(12.99))
        #expect(!transport.sent.contains { json($0.bytes)["sessionId"] as? String == "s0" })
    }

    @Test func aQRIssuedInsideTheWindowGetsNoCountdownUntilItsFirstWholeSecond() {
        let hub = Hub(), transport = RecordingTransport()
        hub.transport = transport
        let reg = SessionRegistry(rules: SessionRules(ttlSeconds: 30, maxAttempts: 5, countdownIntervalSeconds: 1), hub: hub, logCapacity: 8)
        reg.create(id: "s", instanceName: "s", now: t0)
        _ = reg.apply(.start, to: "s", now: t0)
        hub.subscribe(1, to: "s")
        // A slot timer armed for some other phase fires 0.4 s after a new QR: the QR's phase lies in the
        // window, but no whole second of its countdown has passed (qr_generated said 30 s left).
        let issued = t0.addingTimeInterval(10.3)
        _ = reg.apply(.upstreamQR(SessionQR(code: "A", pngDataURL: "p", svg: "s")), to: "s", now: issued)
        #expect(reg.tickCountdowns(now: issued.addingTimeInterval(0.4), since: issued.addingTimeInterval(-0.5)) == 0)
        // Its first whole second comes one interval after it appeared: 29 s left.
        transport.sent.removeAll()
        #expect(reg.tickCountdowns(now: issued.addingTimeInterval(1.01), since: issued.addingTimeInterval(0.4)) == 1)
        #expect(json(transport.sent[0].bytes)["remaining"] as? Int == 29)
    }

    @Test func qrFramesAreEncodedOncePerFormatSetInUse() {
        let hub = Hub(), transport = RecordingTransport()
        hub.transport = transport
        let reg = SessionRegistry(rules: SessionRules(ttlSeconds: 20, maxAttempts: 2), hub: hub, logCapacity: 8)
        reg.create(id: "s1", instanceName: "s1", now: t0)
        hub.subscribe(1, to: "s1"); hub.subscribe(2, to: "s1", formats: .svg); hub.subscribe(3, to: "s1", formats: .svg)
        hub.subscribe(4, to: Hub.everySession, formats: .code); hub.subscribe(5, to: "s1", formats: [.code, .png])
        hub.subscribe(4, to: "s1", formats: .svg) // a direct subscription's formats win over its "*"
        _ = reg.apply(.start, to: "s1", now: t0)
        _ = reg.apply(.upstreamQR(SessionQR(code: "CODE", pngDataURL: "data:image/png;base64,AA", svg: "<svg/>")), to: "s1", now: t0)
        let frames = Dictionary(uniqueKeysWithValues: transport.sent.map { ($0.to, json($0.bytes)) })
        #expect(frames.count == 3)
        #expect(frames[[1]]?["qrCode"] as? String == "data:image/png;base64,AA" && frames[[1]]?["qrSvg"] as? String == "<svg/>"
            && frames[[1]]?["qrText"] == nil)
        #expect(frames[[2, 3, 4]]?["qrSvg"] as? String == "<svg/>" && frames[[2, 3, 4]]?["qrCode"] == nil && frames[[2, 3, 4]]?["qrText"] == nil)
        #expect(frames[[5]]?["qrText"] as? String == "CODE" && frames[[5]]?["qrCode"] as? String == "data:image/png;base64,AA"
            && frames[[5]]?["qrSvg"] == nil)
        #expect(Set(frames.values.map { $0["seq"] as? Int }) == [1])
        transport.sent.removeAll()
        reg.tickCountdowns(now: t0.addingTimeInterval(1))
        #expect(transport.sent.count == 1 && transport.sent[0].to == [1, 2, 3, 4, 5]) // no QR: one frame for all
        // Snapshots and replays honour the formats too.
        let snap = json(reg.welcome(session: "s1", since: nil, now: t0, formats: .code)[0])
        #expect(snap["qrText"] as? String == "CODE" && snap["qrSvg"] == nil && snap["qrCode"] == nil)
        let replay = reg.welcome(session: "s1", since: 0, now: t0, formats: .svg).map(json)
        #expect(replay.first?["action"] as? String == "qr_generated" && replay.first?["qrSvg"] as? String == "<svg/>" && replay.first?["qrCode"] == nil)
    }

    @Test func sinceRecoversMissedEventsOrSaysItCannot() {
        let hub = Hub()
        let reg = SessionRegistry(rules: SessionRules(ttlSeconds: 2, maxAttempts: 3), hub: hub, logCapacity: 4)
        reg.create(id: "s", instanceName: "s", now: t0)
        _ = reg.apply(.start, to: "s", now: t0)
        for i in 0..<3 { _ = reg.apply(.upstreamQR(SessionQR(code: "c\(i)", pngDataURL: "p", svg: "s")), to: "s", now: t0) }
        // The missed events, then the time left now (unnumbered).
        #expect(reg.welcome(session: "s", since: 2, now: t0).map { json($0)["seq"] as? Int } == [3, nil])
        // Behind an older QR, superseded since: a snapshot (with the same, newest QR).
        let behind = json(reg.welcome(session: "s", since: 1, now: t0)[0])
        #expect(behind["action"] as? String == "snapshot" && behind["recovered"] as? Bool == false)
        #expect(reg.welcome(session: "s", since: 3, now: t0).map { json($0)["action"] as? String } == ["countdown"])
        let snap = json(reg.welcome(session: "s", since: nil, now: t0)[0])
        #expect(snap["action"] as? String == "snapshot" && snap["seq"] as? Int == 3 && snap["recovered"] == nil)
        for i in 3..<9 { _ = reg.apply(.upstreamQR(SessionQR(code: "c\(i)", pngDataURL: "p", svg: "s")), to: "s", now: t0) }
        let lost = json(reg.welcome(session: "s", since: 1, now: t0)[0])
        #expect(lost["action"] as? String == "snapshot" && lost["recovered"] as? Bool == false)
        #expect(json(reg.welcome(session: "s", since: 99, now: t0)[0])["recovered"] as? Bool == false)
    }

}

extension SessionMachineTests {
    @Test func anAnswerOvertakenByARefreshIsDropped() {
        var m = started()
        // A poll goes out in the current generation…
        let polled = m.handle(.tick, now: at(5))
        #expect(polled.commands == [.fetchQR])
        let pollGeneration = m.generation
        // …an admin refresh overtakes it and issues its own command…
        let r = m.refresh(now: at(6))
        #expect(r.outcome == .accepted && r.commands == [.logoutThenFetch])
        #expect(m.generation == pollGeneration + 1)
        // …the slow poll's answer arrives: it is about the old round and changes nothing.
        let stale = m.handle(.answer(.upstreamQR(qr("OLD")), generation: pollGeneration), now: at(7))
        #expect(stale.events.isEmpty && stale.commands.isEmpty)
        #expect(m.qr == nil && m.inFlight)
        // The refresh's own answer is the QR subscribers see.
        let fresh = m.handle(.answer(.upstreamQR(qr("NEW")), generation: m.generation), now: at(8))
        #expect(fresh.events == [.qrGenerated(qr("NEW"), expiresAt: at(18), attempt: 0)])
    }

    @Test func anAnswerOvertakenByADisconnectCannotLinkTheSession() {
        var m = started()
        _ = m.handle(.tick, now: at(5))
        let g = m.generation
        _ = m.handle(.disconnect, now: at(6))
        let stale = m.handle(.answer(.upstreamState(.open), generation: g), now: at(7))
        #expect(stale.events.isEmpty && m.status == .disconnected)
    }
}

@Suite struct EventLogBoundTests {
    @Test func theLogIsBoundedByBytesOldestFirstAndStaysContiguous() {
        var log = EventLog(capacity: 100, maxBytes: 1_000)
        for seq in 1...20 { log.append(EventLog.Entry(seq: seq, action: "x", bytes: [UInt8](repeating: 1, count: 100))) }
        #expect(log.entries(after: 0).map(\.seq) == Array(11...20) && log.bytes == 1_000)
        #expect(log.after(12, lastSeq: 20)?.map(\.seq) == Array(13...20))
        #expect(log.after(5, lastSeq: 20) == nil) // gone: a snapshot is due
        log.append(EventLog.Entry(seq: 21, action: "x", bytes: [UInt8](repeating: 1, count: 5_000)))
        #expect(log.entries(after: 0).map(\.seq) == [21] && log.bytes == 5_000)
    }
}
