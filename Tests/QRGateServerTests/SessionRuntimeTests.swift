import Foundation
import Logging
import Synchronization
import Testing
import QRGateCore
import QRGateQR
import QRGateUpstream
@testable import QRGateServer

/// The session runtime driven without sockets: a manual clock, a scripted upstream whose answers the
/// test releases one by one, and a recording hub transport standing in for the WebSocket peers.
@Suite struct SessionRuntimeTests {
    /// An upstream whose `connect` calls wait until the test answers them, in any order.
    final class ScriptedUpstream: SessionUpstream {
        let baseURL = "scripted:"
        private let pending = Mutex<[CheckedContinuation<Result<ConnectResult, UpstreamError>, Never>]>([])
        var waiting: Int { pending.withLock { $0.count } }

        func connect(_ instance: String, instanceToken: String?, number: String?) async -> Result<ConnectResult, UpstreamError> {
            await withCheckedContinuation { cont in pending.withLock { $0.append(cont) } }
        }
        func connectionState(_ instance: String, instanceToken: String?) async -> Result<UpstreamLinkState, UpstreamError> { .success(.connecting) }
        func logout(_ instance: String, instanceToken: String?) async -> Result<Void, UpstreamError> { .success(()) }
        func createInstance(_ instance: String) async -> Result<CreatedInstance, UpstreamError> { .failure(.instanceNotFound(instance)) }

        /// Answers the `index`-th call still waiting (0 = the oldest) with a QR code.
        func answer(_ index: Int, code: String) {
            let cont = pending.withLock { $0.remove(at: index) }
            cont.resume(returning: .success(.qr(UpstreamQR(code: code))))
        }

        /// Waits (bounded) until `n` calls wait for an answer.
        func waitFor(_ n: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(5)
            while waiting < n {
                guard ContinuousClock.now < deadline else { throw CancellationError() }
                try await Task.sleep(for: .milliseconds(2))
            }
        }
    }

    /// What subscribers of the session would receive.
    final class RecordingTransport: HubTransport {
        var frames: [[String: Any]] = []
        func send(_ bytes: [UInt8], to subscribers: [UInt64], coalesceKey: String?) {
            if let o = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] { frames.append(o) }
        }
    }

    /// The loop stand-in: an actor that owns the runtime, as the gateway does on its lws loop.
    actor Loop {
        let clock: ManualClock
        let transport = RecordingTransport()
        let hub = Hub()
        let timers: LoopTimers
        let runtime: SessionRuntime

        init(upstream: ScriptedUpstream, clock: ManualClock, store: SessionStore = MemoryStore()) {
            self.clock = clock
            timers = LoopTimers(clock: clock, arm: { _ in })
            let rules = SessionRules(ttlSeconds: 20, maxAttempts: 2, countdownIntervalSeconds: 1, pollIntervalSeconds: 5,
                                     refreshMinIntervalSeconds: 3, backoffMaxSeconds: 20, connectedCheckSeconds: 30)
            var logger = Logger(label: "runtime-test")
            logger.logLevel = .warning
            runtime = SessionRuntime(registry: SessionRegistry(rules: rules, hub: hub), timers: timers,
                                     frames: QRFrameFactory(renderer: QRRenderer(style: QRStyle(correction: .medium, quietZone: 4, moduleSize: 2))),
                                     cycleSeconds: 3600, store: store, metrics: GatewayMetrics(), logger: logger)
            runtime.upstream = upstream
            hub.transport = transport
            hub.subscribe(1, to: "s")
        }

        func add() {
            runtime.add(id: "s", instanceName: "s", instanceToken: nil, numberId: nil, isolation: self)
            runtime.startCountdowns(every: 1, isolation: self)
        }
        func refresh() -> RefreshOutcome? { runtime.refresh("s", isolation: self) }
        /// Moves the clock and runs what fell due, as the lws timer would.
        func advance(by seconds: Double) { clock.advance(by: seconds); timers.fire() }
        func actions() -> [String] { transport.frames.compactMap { $0["action"] as? String } }
        func shownCodes() -> [String] { transport.frames.filter { $0["action"] as? String == "qr_generated" }.compactMap { $0["qrSvg"] as? String } }
        func currentCode() -> String? { runtime.registry["s"]?.machine.qr?.code }
        var durable: Bool?
        func setToken(_ token: String) { runtime.setInstanceToken(token, for: "s", isolation: self) }
        func askWhenDurable() { durable = nil; runtime.whenDurable("s", within: 30, isolation: self) { self.durable = $0 } }
        func durableAnswer() -> Bool? { durable }
        /// A newcomer's snapshot: its seq, and whether it shows a QR (a PNG data URL).
        func snapshot() -> (seq: Int?, showsQR: Bool) {
            let o = runtime.registry.snapshot(session: "s", now: clock.now()).flatMap { try? JSONSerialization.jsonObject(with: Data($0)) as? [String: Any] } ?? [:]
            return (o["seq"] as? Int, (o["qrCode"] as? String)?.hasPrefix("data:image/png") == true)
        }
        func welcomeActions(since: Int) -> [String] {
            runtime.registry.welcome(session: "s", since: since, now: clock.now()).compactMap {
                (try? JSONSerialization.jsonObject(with: Data($0)) as? [String: Any])?["action"] as? String
            }.filter { $0 != "countdown" }
        }
        func inFlight() -> Bool { runtime.registry["s"]?.machine.inFlight ?? false }
        func svg(of code: String) throws -> String { try QRRenderer(style: QRStyle(correction: .medium, quietZone: 4, moduleSize: 2)).svg(code) }
    }

    /// A durable store whose writes finish when the test says, successfully or not.
    final class GatedStore: SessionStore {
        struct Failed: Error {}
        private let pending = Mutex<[(seqs: [Int], done: @Sendable (Error?) -> Void)]>([])
        var waiting: Int { pending.withLock { $0.count } }
        func loadAll() -> [(StoredSession, [StoredEvent])] { [] }
        func write(_ session: StoredSession, events: [StoredEvent], completion: @escaping @Sendable (Error?) -> Void) {
            pending.withLock { $0.append((events.map(\.seq), completion)) }
        }
        /// Finishes every write waiting; returns the seqs they carried.
        @discardableResult func finish(failing: Bool = false) -> [Int] {
            let all = pending.withLock { p in defer { p = [] }; return p }
            for w in all { w.done(failing ? Failed() : nil) }
            return all.flatMap(\.seqs)
        }
        func recordCycle(_ cycle: StoredCycle) {}
        func recentCycles(limit: Int) -> [StoredCycle] { [] }
        func problem() -> String? { nil }
        func close() {}
    }

    @Test func eventsReachSubscribersOnlyOnceStoredAndAFailedWriteHoldsThemUntilItsRetrySucceeds() async throws {
        let upstream = ScriptedUpstream(), store = GatedStore()
        let loop = Loop(upstream: upstream, clock: ManualClock(), store: store)
        await loop.add()
        try await upstream.waitFor(1)
        upstream.answer(0, code: "FIRST")
        try await waitUntil { await loop.currentCode() == "FIRST" }
        // Numbered and logged, but not out: subscribers and a newcomer's snapshot still see seq 0, no QR.
        #expect(await loop.actions().filter { $0 != "countdown" }.isEmpty)
        var snapshot = await loop.snapshot()
        #expect(snapshot.seq == 0 && !snapshot.showsQR)
        #expect(await loop.welcomeActions(since: 0) == [])
        try await waitUntil { store.waiting > 0 }
        #expect(store.finish().contains(1))
        try await waitUntil { await loop.actions().contains("qr_generated") }
        snapshot = await loop.snapshot()
        #expect(snapshot.seq == 1 && snapshot.showsQR)

        // A refresh whose write fails: its events wait, and are written again a second later.
        #expect(await loop.refresh() == .accepted)
        try await upstream.waitFor(1)
        upstream.answer(0, code: "SECOND")
        try await waitUntil { await loop.currentCode() == "SECOND" }
        try await waitUntil { store.waiting > 0 }
        store.finish(failing: true)
        try await Task.sleep(for: .milliseconds(20))
        #expect(await loop.actions().filter { $0 != "countdown" } == ["qr_generated"])
        #expect(await loop.snapshot().seq == 1)
        await loop.advance(by: SessionRuntime.retrySeconds)
        try await waitUntil { store.waiting > 0 }
        #expect(store.finish() == [2, 3]) // the retry carries everything after the last stored seq
        try await waitUntil { await loop.actions().filter { $0 != "countdown" }.count == 3 }
        #expect(await loop.actions().filter { $0 != "countdown" } == ["qr_generated", "qr_regenerating", "qr_generated"])
        #expect(await loop.snapshot().seq == 3)
    }

    @Test func aChangeWithoutEventsIsNotReportedStoredWhenItsWriteFailed() async throws {
        let upstream = ScriptedUpstream(), store = GatedStore()
        let loop = Loop(upstream: upstream, clock: ManualClock(), store: store)
        await loop.add()
        try await upstream.waitFor(1)
        upstream.answer(0, code: "FIRST")
        try await waitUntil {
            store.finish()
            return await loop.actions().contains("qr_generated")
        }
        // A new instance token: a write with no event. It fails: the caller must not hear "stored".
        await loop.setToken("tok-0123456789")
        try await waitUntil { store.waiting > 0 }
        store.finish(failing: true)
        try await Task.sleep(for: .milliseconds(20))
        await loop.askWhenDurable()
        try await Task.sleep(for: .milliseconds(20))
        #expect(await loop.durableAnswer() == nil)
        // The retry a second later succeeds: now it is stored.
        await loop.advance(by: SessionRuntime.retrySeconds)
        try await waitUntil { store.waiting > 0 }
        store.finish()
        try await waitUntil { await loop.durableAnswer() == true }
    }

    /// A session added and showing its first QR, `code`.
    private func started(showing code: String) async throws -> (ScriptedUpstream, Loop) {
        let upstream = ScriptedUpstream()
        let loop = Loop(upstream: upstream, clock: ManualClock())
        await loop.add()
        try await upstream.waitFor(1)
        upstream.answer(0, code: code)
        try await waitUntil { await loop.currentCode() == code }
        return (upstream, loop)
    }

    @Test func aSlowPollOvertakenByAnAdminRefreshNeverReachesSubscribers() async throws {
        let (upstream, loop) = try await started(showing: "FIRST")
        // The next poll goes out five seconds later and hangs…
        await loop.advance(by: 5)
        try await upstream.waitFor(1)
        // …an admin refreshes meanwhile: its own fetch goes out too.
        #expect(await loop.refresh() == .accepted)
        try await upstream.waitFor(2)
        upstream.answer(1, code: "REFRESHED")
        try await waitUntil { await loop.currentCode() == "REFRESHED" }
        // The slow poll answers last, with an older code: it is dropped.
        upstream.answer(0, code: "STALE")
        try await Task.sleep(for: .milliseconds(50))
        #expect(await loop.currentCode() == "REFRESHED")
        let shown = await loop.shownCodes()
        #expect(shown == [try await loop.svg(of: "FIRST"), try await loop.svg(of: "REFRESHED")])
        #expect(await loop.actions().filter { $0 != "countdown" } == ["qr_generated", "qr_regenerating", "qr_generated"])
    }

    @Test func theManualClockDrivesCountdownsExpiryAndRegeneration() async throws {
        let (upstream, loop) = try await started(showing: "ONE")
        await loop.advance(by: 1)
        await loop.advance(by: 1)
        #expect(await loop.actions() == ["qr_generated", "countdown", "countdown"])
        // Polls (every 5 s) answer nothing new until the QR lapses at 20 s: expiry, then regeneration as attempt 1.
        for second in 3...19 {
            await loop.advance(by: 1)
            if second % 5 == 0 {
                try await upstream.waitFor(1)
                upstream.answer(0, code: "ONE")
                try await waitUntil { await !loop.inFlight() }
            }
        }
        // At 20 s the upstream is asked once more (it may have rotated the code just then): still ONE, so it expired.
        await loop.advance(by: 1)
        try await upstream.waitFor(1)
        #expect(await loop.actions().last == "countdown")
        upstream.answer(0, code: "ONE")
        try await waitUntil { await loop.actions().last == "qr_regenerating" }
        let actions = await loop.actions()
        #expect(actions.filter { $0 == "countdown" }.count == 19)
        #expect(Array(actions.suffix(2)) == ["qr_expired", "qr_regenerating"])
        // The regeneration's fetch (after its logout) brings the next code, as attempt 1.
        try await upstream.waitFor(1)
        upstream.answer(0, code: "TWO")
        try await waitUntil { await loop.currentCode() == "TWO" }
    }

    private func waitUntil(_ condition: () async -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while !(await condition()) {
            guard ContinuousClock.now < deadline else { Issue.record("condition not met within 5 s"); return }
            try await Task.sleep(for: .milliseconds(2))
        }
    }
}
