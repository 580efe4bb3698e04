import Foundation
import Logging
import QRGateCore
import QRGateUpstream

/// Runs the session machines on the event loop: their timers, their upstream commands (on the
/// upstream client's threads, results posted back to the loop) and the refresh cycle.
/// Loop-confined, except where it hops to a Task and back through `server.post`.
public final class SessionRuntime: @unchecked Sendable {
    public let registry: SessionRegistry
    let server: LWSServer
    let timers: LoopTimers
    let frames: QRFrameFactory
    let logger: Logger
    let cycleSeconds: Double
    /// Set once the gateway listens (the simulator's base URL is the gateway's own port).
    var upstream: EvolutionClient?
    private var sessionTimers: [String: LoopTimers.ID] = [:]
    private var byInstance: [String: Set<String>] = [:]
    private var waiters: [String: [Waiter]] = [:]
    private var nextWaiter = 0
    let store: SessionStore
    let metrics: GatewayMetrics
    /// Every numbered event with its encoded bytes (the Supabase endpoint listens here).
    var onEvent: ((String, SessionEvent, [UInt8]) -> Void)?
    var onAdded: ((String) -> Void)?
    /// Per session: the seq handed to the store, the seq it confirmed, and who waits for it.
    private var enqueuedSeq: [String: Int] = [:]
    private var writesInFlight: [String: Int] = [:]
    private var durableWaiters: [String: [() -> Void]] = [:]

    /// Someone (a REST call) waiting for a session's next QR, or for the reason there is none.
    private struct Waiter {
        let id: Int
        let done: (SessionEvent?) -> Void
        let timer: LoopTimers.ID
    }

    public struct CycleResult: Sendable {
        public var instance: String
        public var success: Bool
        public var qrUpdated: Bool
        public var error: String?
    }

    init(registry: SessionRegistry, server: LWSServer, timers: LoopTimers, frames: QRFrameFactory, cycleSeconds: Double,
         store: SessionStore, metrics: GatewayMetrics, logger: Logger) {
        self.store = store
        self.metrics = metrics
        self.registry = registry
        self.server = server
        self.timers = timers
        self.frames = frames
        self.cycleSeconds = cycleSeconds
        self.logger = logger
        registry.observer = { [weak self] session, event in
            self?.metrics.count("qrgate_events_pushed_total", [("type", event.action)])
            self?.notifyWaiters(session.id, event)
            if let onEvent = self?.onEvent, let bytes = session.log.entries(after: session.seq - 1).last?.bytes {
                onEvent(session.id, event, bytes)
            }
        }
    }

    /// Calls `done` on the loop with the session's next `qr_generated`, `connected`, `error` or
    /// `upstream_error` event, or with nil after `timeout` seconds.
    public func waitForQR(_ id: String, timeout: Double, done: @escaping (SessionEvent?) -> Void) {
        nextWaiter += 1
        let wid = nextWaiter
        let timer = timers.schedule(after: timeout) { [weak self] in
            guard let self, let i = self.waiters[id]?.firstIndex(where: { $0.id == wid }) else { return }
            self.waiters[id]!.remove(at: i)
            done(nil)
        }
        waiters[id, default: []].append(Waiter(id: wid, done: done, timer: timer))
    }

    private func notifyWaiters(_ id: String, _ event: SessionEvent) {
        switch event {
        case .qrGenerated, .connected, .error, .upstreamError: break
        default: return
        }
        guard let list = waiters.removeValue(forKey: id) else { return }
        for w in list {
            timers.cancel(w.timer)
            w.done(event)
        }
    }

    /// Starts the periodic refresh cycle (the old cron job).
    func startCycle() {
        timers.schedule(after: cycleSeconds) { [weak self] in
            guard let self else { return }
            self.runCycle { results in
                let failed = results.filter { !$0.success }.count
                self.logger.info("refresh cycle: \(results.count) pending, \(results.count - failed) refreshed, \(failed) failed")
            }
            self.startCycle()
        }
    }

    // MARK: Sessions

    @discardableResult
    public func add(id: String, instanceName: String, instanceToken: String?, numberId: String?) -> Bool {
        guard registry.create(id: id, instanceName: instanceName, instanceToken: instanceToken, numberId: numberId, now: Date()) else { return false }
        byInstance[instanceName, default: []].insert(id)
        logger.info("session \(id) added (instance \(instanceName))")
        persist(id, force: true)
        onAdded?(id)
        feed(id, .start)
        return true
    }

    /// Loads what the store kept; pending sessions go on by the same rules (a QR that lapsed while
    /// the gateway was down expires now and regenerates or fails).
    public func restore(from stored: [(StoredSession, [StoredEvent])]) {
        let now = Date()
        for (s, events) in stored {
            registry.restore(s, events: events, now: now)
            byInstance[s.instanceName, default: []].insert(s.id)
            enqueuedSeq[s.id] = s.seq
            logger.info("session \(s.id) restored: \(s.state.status.rawValue), attempt \(s.state.attempt), seq \(s.seq)")
        }
        for (s, _) in stored where s.state.status == .pending { feed(s.id, .tick) }
    }

    public func setInstanceToken(_ token: String, for id: String) {
        registry.setInstanceToken(token, for: id)
        persist(id, force: true)
    }

    /// Runs `done` on the loop once everything this session changed so far is stored.
    public func whenDurable(_ id: String, _ done: @escaping () -> Void) {
        if writesInFlight[id, default: 0] == 0 { return done() }
        durableWaiters[id, default: []].append(done)
    }

    private func persist(_ id: String, force: Bool = false) {
        guard let s = registry[id], let stored = registry.stored(id) else { return }
        let last = enqueuedSeq[id] ?? -1
        guard force || s.seq != last else { return }
        // Countdowns are numbered but not logged at rest: the newest one is stale by the time anyone replays it.
        let events = s.log.entries(after: max(last, 0)).filter { $0.action != "countdown" }.map {
            StoredEvent(sessionId: id, seq: $0.seq, action: $0.action, payload: $0.bytes, at: s.lastActiveAt)
        }
        enqueuedSeq[id] = s.seq
        writesInFlight[id, default: 0] += 1
        let server = server, logger = logger
        store.write(stored, events: events) { [weak self] error in
            if let error { logger.error("store write for session \(id) failed: \(error)") }
            guard let self else { return }
            server.post {
                self.writesInFlight[id, default: 1] -= 1
                if self.writesInFlight[id] == 0, let list = self.durableWaiters.removeValue(forKey: id) { list.forEach { $0() } }
            }
        }
    }

    /// Runs an input through the session's machine and carries out what it asks for.
    public func feed(_ id: String, _ input: SessionInput) {
        let before = registry[id]?.machine.status
        let commands = registry.apply(input, to: id, now: Date())
        if let after = registry[id]?.machine.status, after != before {
            logger.info("session \(id): \(before?.rawValue ?? "new") → \(after.rawValue)")
        }
        persist(id)
        for c in commands { execute(c, for: id) }
        reschedule(id)
    }

    public func refresh(_ id: String) -> RefreshOutcome? {
        guard let r = registry.refresh(id, now: Date()) else { return nil }
        persist(id, force: r.outcome == .accepted)
        for c in r.commands { execute(c, for: id) }
        reschedule(id)
        return r.outcome
    }

    /// Webhook news, in the same shape polling produces.
    public func deliver(_ event: UpstreamEvent) {
        for id in byInstance[event.instance] ?? [] {
            switch event.kind {
            case let .qr(qr):
                frame(qr) { [weak self] input in self?.feed(id, input) }
            case .qrLimitReached:
                feed(id, .upstreamState(.close))
            case let .state(state, _):
                feed(id, .upstreamState(UpstreamLinkState(rawValue: state.rawValue) ?? .close))
            }
        }
    }

    public func instanceToken(of instance: String) -> String? {
        byInstance[instance]?.lazy.compactMap { self.registry[$0]?.instanceToken }.first
    }

    private func reschedule(_ id: String) {
        if let t = sessionTimers.removeValue(forKey: id) { timers.cancel(t) }
        guard let deadline = registry.nextDeadline(of: id) else { return }
        sessionTimers[id] = timers.schedule(after: deadline.timeIntervalSinceNow) { [weak self] in
            self?.sessionTimers[id] = nil
            self?.feed(id, .tick)
        }
    }

    // MARK: Upstream commands

    private func execute(_ command: SessionCommand, for id: String) {
        guard let s = registry[id], let upstream else { return }
        let instance = s.instanceName, token = s.instanceToken
        let server = server
        Task { [weak self] in
            guard let self else { return }
            let input: SessionInput
            switch command {
            case .logout:
                _ = await upstream.logout(instance, instanceToken: token)
                input = .logoutFinished
            case .logoutThenFetch:
                _ = await upstream.logout(instance, instanceToken: token) // going on if that fails
                input = await self.fetch(upstream, id: id, instance: instance, token: token)
            case .fetchQR:
                input = await self.fetch(upstream, id: id, instance: instance, token: token)
            case .checkState:
                switch await upstream.connectionState(instance, instanceToken: token) {
                case let .success(state): input = .upstreamState(UpstreamLinkState(rawValue: state.rawValue) ?? .close)
                case let .failure(e): input = .upstreamFailed(e.description)
                }
            }
            server.post { self.feed(id, input) }
        }
    }

    /// GET connect as a machine input; creates the instance upstream when it is missing.
    private func fetch(_ upstream: EvolutionClient, id: String, instance: String, token: String?) async -> SessionInput {
        var result = await upstream.connect(instance, instanceToken: token)
        if case .failure(.instanceNotFound) = result {
            if case let .success(created) = await upstream.createInstance(instance) {
                if let newToken = created.token {
                    server.post { [weak self] in
                        self?.registry.setInstanceToken(newToken, for: id)
                        self?.persist(id, force: true)
                    }
                }
                result = await upstream.connect(instance, instanceToken: created.token ?? token)
            }
        }
        return input(from: result)
    }

    private func input(from result: Result<ConnectResult, UpstreamError>) -> SessionInput {
        switch result {
        case let .success(.qr(qr)):
            do {
                let f = try frames.frame(for: qr)
                return .upstreamQR(SessionQR(code: f.code, pngDataURL: f.pngDataURL, svg: f.svg))
            } catch {
                return .upstreamFailed("upstream QR code cannot be rendered: \(error)")
            }
        case .success(.noQRYet): return .upstreamNoQR
        case let .success(.state(state)): return .upstreamState(UpstreamLinkState(rawValue: state.rawValue) ?? .close)
        case let .failure(e): return .upstreamFailed(e.description)
        }
    }

    private func frame(_ qr: UpstreamQR, then: @escaping @Sendable (SessionInput) -> Void) {
        let frames = frames, server = server
        Task {
            let input: SessionInput
            do {
                let f = try frames.frame(for: qr)
                input = .upstreamQR(SessionQR(code: f.code, pngDataURL: f.pngDataURL, svg: f.svg))
            } catch {
                input = .upstreamFailed("upstream QR code cannot be rendered: \(error)")
            }
            server.post { then(input) }
        }
    }

    // MARK: Refresh cycle

    /// Refreshes every pending session at once; `done` runs on the loop with one result per session.
    public func runCycle(_ done: @escaping @Sendable ([CycleResult]) -> Void) {
        guard let upstream else { return done([]) }
        let pending = registry.sessions.values.filter { $0.machine.status == .pending }.sorted { $0.id < $1.id }
        let jobs = pending.map { (id: $0.id, instance: $0.instanceName, token: $0.instanceToken, code: $0.machine.qr?.code) }
        let server = server
        let started = Date(), clock = ContinuousClock.now
        Task { [weak self] in
            guard let self else { return }
            let outcomes = await withTaskGroup(of: (Int, SessionInput).self) { group in
                for (i, job) in jobs.enumerated() {
                    group.addTask { (i, await self.fetch(upstream, id: job.id, instance: job.instance, token: job.token)) }
                }
                var all = [SessionInput?](repeating: nil, count: jobs.count)
                for await (i, input) in group { all[i] = input }
                return all.compactMap { $0 }
            }
            server.post {
                var results: [CycleResult] = []
                for (job, input) in zip(jobs, outcomes) {
                    self.feed(job.id, input)
                    switch input {
                    case let .upstreamQR(qr):
                        results.append(CycleResult(instance: job.instance, success: true, qrUpdated: qr.code != job.code))
                    case .upstreamNoQR:
                        results.append(CycleResult(instance: job.instance, success: true, qrUpdated: false, error: "No QR code available from Evolution API"))
                    case .upstreamState:
                        results.append(CycleResult(instance: job.instance, success: true, qrUpdated: false))
                    case let .upstreamFailed(reason):
                        results.append(CycleResult(instance: job.instance, success: false, qrUpdated: false, error: reason))
                    default:
                        results.append(CycleResult(instance: job.instance, success: false, qrUpdated: false, error: "unexpected"))
                    }
                }
                let d = ContinuousClock.now - clock
                let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
                let failed = results.filter { !$0.success }.count
                self.metrics.time("qrgate_refresh_cycle_duration_seconds", seconds: seconds)
                self.metrics.count("qrgate_refresh_cycles_total", [("outcome", failed == 0 ? "ok" : "partial")])
                self.store.recordCycle(StoredCycle(startedAt: started, durationMs: Int(seconds * 1000), total: results.count,
                                                   refreshed: results.count - failed, failed: failed))
                done(results)
            }
        }
    }
}
