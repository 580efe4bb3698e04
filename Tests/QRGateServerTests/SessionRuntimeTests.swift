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

        init(upstream: ScriptedUpstream, clock: ManualClock) {
            self.clock = clock
            timers = LoopTimers(clock: clock, arm: { _ in })
            let rules = SessionRules(ttlSeconds: 20, maxAttempts: 2, countdownIntervalSeconds: 1, pollIntervalSeconds: 5,
                                     refreshMinIntervalSeconds: 3, backoffMaxSeconds: 20, connectedCheckSeconds: 30)
            var logger = Logger(label: "runtime-test")
            logger.logLevel = .warning
            runtime = SessionRuntime(registry: SessionRegistry(rules: rules, hub: hub), timers: timers,
                                     frames: QRFrameFactory(renderer: QRRenderer(style: QRStyle(correction: .medium, quietZone: 4, moduleSize: 2))),
                                     cycleSeconds: 3600, store: MemoryStore(), metrics: GatewayMetrics(), logger: logger)
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
        func inFlight() -> Bool { runtime.registry["s"]?.machine.inFlight ?? false }
        func svg(of code: String) throws -> String { try QRRenderer(style: QRStyle(correction: .medium, quietZone: 4, moduleSize: 2)).svg(code) }
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
        await loop.advance(by: 1)
        try await upstream.waitFor(1)
        let actions = await loop.actions()
        #expect(actions.filter { $0 == "countdown" }.count == 19)
        #expect(Array(actions.suffix(2)) == ["qr_expired", "qr_regenerating"])
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
