import Foundation
import Logging
import QRGateCore
import QRGateUpstream

/// Runs the session machines for the actor that owns them (the gateway, pinned to its loop): their
/// timers, their upstream commands and the refresh cycle. Not Sendable: every method runs isolated to
/// the owning actor, which methods that start upstream work take as `isolation`; their tasks inherit
/// it, so `await upstream.connect(…)` resumes on the loop and the answer is fed back there.
public final class SessionRuntime {
    public let registry: SessionRegistry
    let timers: LoopTimers
    let frames: QRFrameFactory
    let logger: Logger
    let cycleSeconds: Double
    var clock: any GatewayClock { timers.clock }
    /// Set once the gateway listens (the simulator's base URL is the gateway's own port).
    var upstream: (any SessionUpstream)?
    var sessionTimers: [String: LoopTimers.ID] = [:]
    var byInstance: [String: Set<String>] = [:]
    private var waiters: [String: [Waiter]] = [:]
    private var nextWaiter = 0
    let store: SessionStore
    let metrics: GatewayMetrics
    /// Per session: the seq handed to the store, and how many writes are still running, and who waits for them.
    var enqueuedSeq: [String: Int] = [:]
    /// Per session: every event up to this seq is stored (and published).
    var durableSeq: [String: Int] = [:]
    /// Per session: the machine state handed to the store last.
    var enqueuedState: [String: SessionMachine.Persisted] = [:]
    var writesInFlight: [String: Int] = [:]
    var durableWaiters: [String: [(id: Int, done: (Bool) -> Void)]] = [:]
    var nextDurableWaiter = 0
    /// Sessions whose failed write is written again soon.
    var retrying: Set<String> = []
    /// Sessions with a change the store has not taken yet (a write failed and no later one succeeded).
    var unstored: Set<String> = []
    /// How long a failed write waits before it is tried again.
    static let retrySeconds = 1.0

    // MARK: Cluster state (store.mode = postgres; see SessionRuntime+Cluster.swift)
    /// Set in cluster mode: this node runs the sessions it holds a lease on and follows the others.
    var cluster: (any SessionCluster)?
    /// The sessions this node runs (its leases). Without a cluster it runs every session.
    var owned: Set<String> = []
    /// Who runs each session, as last heard (the bus, a lease read).
    var owners: [String: String] = [:]
    /// Sessions to read from the store (the seq this node has; nil: not known here yet), and whether a read runs.
    var syncWanted: [String: Int?] = [:]
    var syncing = false
    /// Callers waiting until this node's copy of a session reaches a seq (an order's answer).
    var catchUps: [String: [(id: Int, seq: Int, done: (Bool) -> Void)]] = [:]
    var nextCatchUp = 0
    /// Sessions claimed whose adoption is under way (their pictures being drawn), with the claimed seq; a loss
    /// meanwhile cancels it.
    var adopting: [String: Int] = [:]
    /// New-session orders checked against the store once (another node may have made the session a moment ago).
    var checkedNew: Set<String> = []
    /// Orders sent to other nodes, waiting for their replies.
    var pendingOrders: [Int: (timer: LoopTimers.ID, done: (JSONValue?) -> Void)] = [:]
    var nextOrder = 0
    /// How long an order waits for the owner's reply.
    var orderTimeoutSeconds = 5.0

    /// Whether this node runs the session (its timers, upstream calls and writes).
    func runs(_ id: String) -> Bool { cluster == nil || owned.contains(id) }

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

    init(registry: SessionRegistry, timers: LoopTimers, frames: QRFrameFactory, cycleSeconds: Double,
         store: SessionStore, metrics: GatewayMetrics, logger: Logger) {
        self.store = store
        self.metrics = metrics
        self.registry = registry
        self.timers = timers
        self.frames = frames
        self.cycleSeconds = cycleSeconds
        self.logger = logger
        registry.holdsUntilStored = store.isDurable
        registry.observer = { [weak self] session, event in
            self?.metrics.count("qrgate_events_pushed_total", [("type", event.action)])
            self?.notifyWaiters(session.id, event)
        }
    }

    /// Calls `done` with the session's next `qr_generated`, `connected`, `error` or `upstream_error`
    /// event, or with nil after `timeout` seconds.
    public func waitForQR(_ id: String, timeout: Double, isolation: isolated any Actor, done: @escaping (SessionEvent?) -> Void) {
        nextWaiter += 1
        let wid = nextWaiter
        let timer = timers.schedule(after: timeout) { [weak self] in
            _ = isolation
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

    /// The finest spread of countdowns: at most `SessionRegistry.countdownSlots` wake-ups per interval (the
    /// wheel's buckets). Each session ticks once per interval on its own whole second; the loop wakes when the
    /// next one is due (once a second for one watched session), never on a fixed fast beat: a wake-up costs a
    /// `poll()` over every connection, which a 50 Hz beat paid even with one session (Benchmarks/results/NOTES.md, issue 19).
    private var countdownsDone: Date?

    /// Countdowns, once per interval per session, for the sessions someone watches (nothing for the others).
    func startCountdowns(every seconds: Double, isolation: isolated any Actor) {
        let now = clock.now()
        let slot = seconds / Double(SessionRegistry.countdownSlots)
        // Nobody watching a QR: look again in an interval (a new subscriber has its snapshot's `remaining`).
        let due = registry.nextCountdown(after: now) ?? now.addingTimeInterval(seconds)
        timers.schedule(at: max(due, now.addingTimeInterval(slot))) { [weak self] in
            guard let self else { return }
            _ = isolation
            let now = self.clock.now()
            self.registry.tickCountdowns(now: now, since: self.countdownsDone ?? now.addingTimeInterval(-slot))
            self.countdownsDone = now
            self.startCountdowns(every: seconds, isolation: isolation)
        }
    }

    /// Every few seconds: a session whose events wait for the store with no write out and none due again
    /// would wait until its next change (a quiet session: for ever). That must not happen; if it does, it is
    /// said loudly and written again, so its subscribers are not left on the old QR.
    func startHoldWatch(every seconds: Double = 5, isolation: isolated any Actor) {
        timers.schedule(after: seconds) { [weak self] in
            guard let self else { return }
            for id in self.registry.holding where self.runs(id) && self.writesInFlight[id, default: 0] == 0 && !self.retrying.contains(id) {
                self.logger.error("session \(id): events wait for the store with no write out (a bug): written again")
                self.metrics.count("qrgate_held_events_repaired_total")
                // Everything after the last stored seq, as after a failed write.
                self.enqueuedSeq[id] = self.durableSeq[id] ?? -1
                self.persist(id, force: true, isolation: isolation)
            }
            self.startHoldWatch(every: seconds, isolation: isolation)
        }
    }

    /// Starts the periodic refresh cycle (the old cron job).
    func startCycle(isolation: isolated any Actor) {
        timers.schedule(after: cycleSeconds) { [weak self] in
            guard let self else { return }
            let pending = self.registry.sessions.values.count { $0.machine.status == .pending && self.runs($0.id) }
            self.runCycle(isolation: isolation, skippingNewsWithin: self.cycleSeconds) { results in
                let failed = results.filter { !$0.success }.count
                self.logger.info("refresh cycle: \(pending) pending, \(results.count) without upstream news for \(self.cycleSeconds) s asked, \(results.count - failed) refreshed, \(failed) failed")
            }
            self.startCycle(isolation: isolation)
        }
    }

    // MARK: Sessions

    @discardableResult
    public func add(id: String, instanceName: String, instanceToken: String?, numberId: String?, phoneNumber: String? = nil,
                    isolation: isolated any Actor) -> Bool {
        guard registry.create(id: id, instanceName: instanceName, instanceToken: instanceToken, numberId: numberId, now: clock.now()) else { return false }
        registry.setPhoneNumber(phoneNumber, for: id)
        byInstance[instanceName, default: []].insert(id)
        if let cluster {
            // A new session is run by the node that made it (its first write takes the lease).
            owned.insert(id)
            owners[id] = cluster.nodeId
        }
        logger.info("session \(id) added (instance \(instanceName))")
        persist(id, force: true, isolation: isolation)
        registry.hub.sessionAdded(id)
        feed(id, .start, isolation: isolation)
        return true
    }

    /// Loads what the store kept; pending sessions go on by the same rules (a QR that lapsed while
    /// the gateway was down expires now and regenerates or fails).
    public func restore(from stored: [(StoredSession, [StoredEvent])], isolation: isolated any Actor) {
        let now = clock.now()
        // The stored codes' pictures are drawn when first wanted (a restored fleet nobody watches draws none).
        let frames = frames
        let pictures: SessionRegistry.Pictures = { code, png, pairing in
            try? frames.frame(for: UpstreamQR(code: code, base64: png, pairingCode: pairing))
        }
        for (s, events) in stored {
            registry.restore(s, events: events, now: now, pictures: pictures)
            byInstance[s.instanceName, default: []].insert(s.id)
            enqueuedSeq[s.id] = s.seq
            durableSeq[s.id] = s.seq
            logger.info("session \(s.id) restored: \(s.state.status.rawValue), attempt \(s.state.attempt), seq \(s.seq)")
        }
        // In a cluster nothing runs until its lease is taken (the cluster's first round claims them).
        for (s, _) in stored where s.state.status == .pending && runs(s.id) { feed(s.id, .tick, isolation: isolation) }
    }

    public func setInstanceToken(_ token: String, for id: String, isolation: isolated any Actor) {
        registry.setInstanceToken(token, for: id)
        persist(id, force: true, isolation: isolation)
    }

    /// Runs `done(true)` once everything this session changed so far is stored (and published), or
    /// `done(false)` after `within` seconds if the store has not managed it by then.
    public func whenDurable(_ id: String, within seconds: Double, isolation: isolated any Actor, _ done: @escaping (Bool) -> Void) {
        if isDurable(id) { return done(true) }
        nextDurableWaiter += 1
        let wid = nextDurableWaiter
        var fired = false
        let timer = timers.schedule(after: seconds) { [weak self] in
            _ = isolation
            guard let self, let i = self.durableWaiters[id]?.firstIndex(where: { $0.id == wid }) else { return }
            self.durableWaiters[id]!.remove(at: i)
            if !fired { fired = true; done(false) }
        }
        durableWaiters[id, default: []].append((wid, { [weak self] ok in
            self?.timers.cancel(timer)
            if !fired { fired = true; done(ok) }
        }))
    }

    func isDurable(_ id: String) -> Bool {
        writesInFlight[id, default: 0] == 0 && !registry.isHolding(id) && !unstored.contains(id)
    }

    func persist(_ id: String, force: Bool = false, isolation: isolated any Actor) {
        guard runs(id), let s = registry[id], let stored = registry.stored(id) else { return }
        let last = enqueuedSeq[id] ?? -1
        // New events, or a change that has none (a start: idle → pending, attempts reset), which a node taking
        // the session over or a restart must find stored too.
        guard force || s.seq != last || enqueuedState[id] != stored.state else { return }
        enqueuedState[id] = stored.state
        // A QR event is kept as its code: the pictures are drawn again from it (the renderer is deterministic).
        let events = s.log.entries(after: max(last, 0)).map {
            StoredEvent(sessionId: id, seq: $0.seq, action: $0.action, payload: registry.atRest($0, of: id), at: s.lastActiveAt)
        }
        let from = max(last, 0), through = s.seq
        enqueuedSeq[id] = through
        writesInFlight[id, default: 0] += 1
        let store = store, logger = logger
        let queued = ContinuousClock.now
        // Tasks isolated to the loop start in the order they are made (its executor runs jobs of one priority
        // FIFO), and each hands its write to the store before its first suspension: writes reach the store in
        // seq order. High priority: the task and the store's answer run ahead of the loop's queue of frames
        // and webhooks (LoopExecutor), since subscribers see these events only once the answer is in.
        Task(priority: .high) {
            _ = isolation
            let error = await store.write(stored, events: events)
            // How long this session's new events waited for the store (they reach subscribers only now).
            self.metrics.time("qrgate_store_write_duration_seconds", duration: ContinuousClock.now - queued)
            self.writesInFlight[id, default: 1] -= 1
            if !self.runs(id) {
                // This node stopped running the session while the write was out: what the store holds now (this
                // write or not) is what its copy follows.
                if let error, !(error is LeaseLost) { logger.notice("store write for session \(id) failed after this node stopped running it: \(error)") }
                return self.want(id, isolation: isolation)
            }
            if let lost = error as? LeaseLost {
                // Another node runs the session now: its writes win; this node follows it from here.
                self.relinquish([lost.session], reason: nil, isolation: isolation)
            } else if let error {
                logger.error("store write for session \(id) failed (its events wait, tried again in \(Self.retrySeconds) s): \(error)")
                // Everything after the last stored seq goes again, in one write.
                self.unstored.insert(id)
                self.enqueuedSeq[id] = self.durableSeq[id] ?? -1
                self.enqueuedState[id] = nil
                if self.retrying.insert(id).inserted {
                    _ = self.timers.schedule(after: Self.retrySeconds) { [weak self] in
                        self?.retrying.remove(id)
                        self?.persist(id, force: true, isolation: isolation)
                    }
                }
            } else if from <= self.durableSeq[id] ?? 0 {
                // Contiguous with what is stored: these events may go out now, in order.
                self.unstored.remove(id)
                self.durableSeq[id] = max(self.durableSeq[id] ?? 0, through)
                self.registry.release(id, through: through)
            }
            if self.isDurable(id), let list = self.durableWaiters.removeValue(forKey: id) { list.forEach { $0.done(true) } }
        }
    }

    /// Runs an input through the session's machine and carries out what it asks for.
    public func feed(_ id: String, _ input: SessionInput, isolation: isolated any Actor) {
        // A session's state belongs to its loop; a task that resumed anywhere else must stop here, not race.
        isolation.preconditionIsolated("SessionRuntime.feed off its loop")
        // Timers and upstream answers of a session another node took over meanwhile end here.
        guard runs(id) else { return }
        let before = registry[id]?.machine.status
        let commands = registry.apply(input, to: id, now: clock.now())
        if let after = registry[id]?.machine.status, after != before {
            logger.info("session \(id): \(before?.rawValue ?? "new") → \(after.rawValue)")
        }
        persist(id, isolation: isolation)
        for c in commands { execute(c, for: id, isolation: isolation) }
        reschedule(id, isolation: isolation)
    }

    /// Links by phone number from now on (`phoneNumber`: validated digits), starting a new round at once:
    /// the next QR comes with a pairing code. Rate-limited like a refresh; `asAttempt` (a browser asking)
    /// spends one of the session's attempts instead of resetting them.
    func pair(_ id: String, phoneNumber: String, asAttempt: Bool = false, isolation: isolated any Actor) -> RefreshOutcome? {
        guard runs(id), let s = registry[id] else { return nil }
        if s.machine.status == .connected { return .alreadyConnected }
        let previous = s.phoneNumber
        registry.setPhoneNumber(phoneNumber, for: id)
        let outcome = refresh(id, message: SessionMachine.pairingMessage, asAttempt: asAttempt, isolation: isolation)
        // A refused round leaves the session as it was.
        if outcome != .accepted { registry.setPhoneNumber(previous, for: id) }
        if outcome == .accepted { logger.info("session \(id): pairing code requested for \(PhoneNumber.masked(phoneNumber))") }
        return outcome
    }

    func refresh(_ id: String, message: String = SessionMachine.refreshMessage, asAttempt: Bool = false, isolation: isolated any Actor) -> RefreshOutcome? {
        guard runs(id), let r = registry.refresh(id, now: clock.now(), message: message, asAttempt: asAttempt) else { return nil }
        persist(id, force: r.outcome == .accepted, isolation: isolation)
        for c in r.commands { execute(c, for: id, isolation: isolation) }
        reschedule(id, isolation: isolation)
        return r.outcome
    }

    /// Webhook news, in the same shape polling produces (no generation: fresh news always counts).
    public func deliver(_ event: UpstreamEvent, isolation: isolated any Actor) {
        for id in byInstance[event.instance] ?? [] {
            guard runs(id) else {
                // Another node runs it: the news goes there (not waited for; the bus brings what it changes).
                forward(event, of: id, isolation: isolation)
                continue
            }
            deliver(event, to: id, isolation: isolation)
        }
    }

    /// Webhook news for one session this node runs.
    func deliver(_ event: UpstreamEvent, to id: String, isolation: isolated any Actor) {
        switch event.kind {
        case let .qr(qr):
            if let current = registry[id]?.machine.qr, current.code == qr.code {
                return feed(id, .pushed(.upstreamQR(QRFrameFactory.paired(current, qr))), isolation: isolation)
            }
            // Nothing to draw now (nobody watches, or drawn already): fed at once. Else drawn off the loop first.
            let wanted = registry.hub.picturesWanted(id)
            if let frame = try? frames.frame(for: qr), frame.pictures.has(wanted) {
                return feed(id, .pushed(.upstreamQR(frame)), isolation: isolation)
            }
            let frames = frames
            Task {
                _ = isolation
                let input = await Self.input(from: .success(.qr(qr)), frames: frames, drawing: wanted)
                self.feed(id, .pushed(input), isolation: isolation)
            }
        case .qrLimitReached, .state(.close, _), .state(.refused, _):
            feed(id, .upstreamEndHint, isolation: isolation)
        case let .state(state, _):
            feed(id, .upstreamState(state), isolation: isolation)
        }
    }

    public func instanceToken(of instance: String) -> String? {
        byInstance[instance]?.lazy.compactMap { self.registry[$0]?.instanceToken }.first
    }

    func reschedule(_ id: String, isolation: isolated any Actor) {
        if let t = sessionTimers.removeValue(forKey: id) { timers.cancel(t) }
        guard runs(id), let deadline = registry.nextDeadline(of: id) else { return }
        sessionTimers[id] = timers.schedule(at: deadline) { [weak self] in
            self?.sessionTimers[id] = nil
            self?.feed(id, .tick, isolation: isolation)
        }
    }

    // MARK: Upstream commands

    /// Runs one command upstream; its answer comes back tagged with the generation it was issued in,
    /// so the machine drops it if a refresh, disconnect or expiry overtook it meanwhile.
    private func execute(_ command: SessionCommand, for id: String, isolation: isolated any Actor) {
        guard runs(id), let s = registry[id], let upstream else { return }
        let instance = s.instanceName, token = s.instanceToken, generation = s.machine.generation, number = s.phoneNumber
        Task {
            _ = isolation
            let answer: SessionInput
            switch command {
            case .logout:
                _ = await upstream.logout(instance, instanceToken: token)
                answer = .logoutFinished
            case .logoutThenFetch:
                _ = await upstream.logout(instance, instanceToken: token) // going on if that fails
                answer = await self.fetch(upstream, id: id, instance: instance, token: token, number: number, isolation: isolation)
            case .fetchQR:
                answer = await self.fetch(upstream, id: id, instance: instance, token: token, number: number, isolation: isolation)
            case .checkState:
                switch await upstream.connectionState(instance, instanceToken: token) {
                case let .success(state): answer = .upstreamState(state)
                case let .failure(e): answer = .upstreamFailed(e.description)
                }
            }
            self.feed(id, .answer(answer, generation: generation), isolation: isolation)
        }
    }

    /// GET connect as a machine input; creates the instance upstream when it is missing.
    private func fetch(_ upstream: any SessionUpstream, id: String, instance: String, token: String?, number: String?,
                       isolation: isolated any Actor) async -> SessionInput {
        var result = await upstream.connect(instance, instanceToken: token, number: number)
        if case .failure(.instanceNotFound) = result {
            if case let .success(created) = await upstream.createInstance(instance) {
                if let newToken = created.token {
                    registry.setInstanceToken(newToken, for: id)
                    persist(id, force: true, isolation: isolation)
                }
                result = await upstream.connect(instance, instanceToken: created.token ?? token, number: number)
            }
        }
        // The code the session already shows (a poll while nothing rotated): no render, whatever the
        // factory's cache still holds (it is smaller than a fleet of thousands of sessions).
        if case let .success(.qr(qr)) = result, let current = registry[id]?.machine.qr, current.code == qr.code {
            return .upstreamQR(QRFrameFactory.paired(current, qr))
        }
        return await Self.input(from: result, frames: frames, drawing: registry.hub.picturesWanted(id))
    }

    /// An upstream answer as a machine input, with the pictures its watchers want (`formats`) drawn on the
    /// global pool, never on the loop; the others are drawn when first wanted.
    ///
    /// `@concurrent`, so the caller hops back to its loop when it returns. As a nonisolated(nonsending)
    /// function, the release build (Swift 6.3.1) resumed its caller, a task isolated to a captured
    /// `isolated any Actor`, on the global pool after a render: `feed`'s precondition caught it. The
    /// optimizer's hop removal around nonisolated(nonsending) exits, swiftlang/swift#88259 (fixed after 6.3.1).
    @concurrent
    static func input(from result: Result<ConnectResult, UpstreamError>, frames: QRFrameFactory, drawing formats: QRFormats) async -> SessionInput {
        switch result {
        case let .success(.qr(qr)):
            do {
                return .upstreamQR(try frames.frame(for: qr, drawing: formats))
            } catch {
                return .upstreamFailed("upstream QR code cannot be rendered: \(error)")
            }
        case .success(.noQRYet): return .upstreamNoQR
        case let .success(.state(state)): return .upstreamState(state)
        case let .failure(e): return .upstreamFailed(e.description)
        }
    }

    // MARK: Refresh cycle

    /// Refreshes every pending session at once; `done` runs with one result per session asked.
    /// `skippingNewsWithin`: sessions that heard from the upstream (an answer or a webhook) less than this many
    /// seconds ago are not asked (the timed cycle: polls and webhooks already keep them current, and asking
    /// 3 000 of them a minute again was a fleet's second largest cost); nil asks every pending session.
    public func runCycle(isolation: isolated any Actor, skippingNewsWithin fresh: Double? = nil, _ done: @escaping ([CycleResult]) -> Void) {
        guard let upstream else { return done([]) }
        let started = clock.now(), clockStart = ContinuousClock.now
        let pending = registry.sessions.values.filter { s in
            guard s.machine.status == .pending, runs(s.id) else { return false }
            guard let fresh, let heard = s.machine.lastUpstreamAt else { return true }
            return started.timeIntervalSince(heard) >= fresh
        }.sorted { $0.id < $1.id }
        let jobs = pending.map { (id: $0.id, instance: $0.instanceName, token: $0.instanceToken, code: $0.machine.qr?.code,
                                  generation: $0.machine.generation, number: $0.phoneNumber, wanted: registry.hub.picturesWanted($0.id)) }
        Task {
            _ = isolation
            let frames = self.frames
            // Each answer is turned into an input (rendering new codes) in its own child task, off the loop.
            let outcomes = await withTaskGroup(of: (Int, Result<ConnectResult, UpstreamError>, SessionInput).self) { group in
                for (i, job) in jobs.enumerated() {
                    group.addTask {
                        let r = await upstream.connect(job.instance, instanceToken: job.token, number: job.number)
                        return (i, r, await Self.input(from: r, frames: frames, drawing: job.wanted))
                    }
                }
                var all = [(Result<ConnectResult, UpstreamError>, SessionInput)?](repeating: nil, count: jobs.count)
                for await (i, r, input) in group { all[i] = (r, input) }
                return all
            }
            var results: [CycleResult] = []
            for (job, outcome) in zip(jobs, outcomes) {
                var input = outcome?.1 ?? .upstreamFailed("no answer")
                if case .failure(.instanceNotFound)? = outcome?.0 {
                    // Gone upstream: created again (one by one, these are rare), as a poll would.
                    input = await self.fetch(upstream, id: job.id, instance: job.instance, token: job.token, number: job.number, isolation: isolation)
                }
                self.feed(job.id, .answer(input, generation: job.generation), isolation: isolation)
                results.append(Self.cycleResult(job.instance, input, previousCode: job.code))
            }
            let d = ContinuousClock.now - clockStart
            let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
            let failed = results.filter { !$0.success }.count
            self.metrics.time("qrgate_refresh_cycle_duration_seconds", duration: d)
            self.metrics.count("qrgate_refresh_cycles_total", [("outcome", failed == 0 ? "ok" : "partial")])
            self.store.recordCycle(StoredCycle(startedAt: started, durationMs: Int(seconds * 1000), total: results.count,
                                               refreshed: results.count - failed, failed: failed))
            done(results)
        }
    }

    private static func cycleResult(_ instance: String, _ input: SessionInput, previousCode: String?) -> CycleResult {
        switch input {
        case let .upstreamQR(qr):
            CycleResult(instance: instance, success: true, qrUpdated: qr.code != previousCode)
        case .upstreamNoQR:
            CycleResult(instance: instance, success: true, qrUpdated: false, error: "No QR code available from Evolution API")
        case .upstreamState:
            CycleResult(instance: instance, success: true, qrUpdated: false)
        case let .upstreamFailed(reason):
            CycleResult(instance: instance, success: false, qrUpdated: false, error: reason)
        default:
            CycleResult(instance: instance, success: false, qrUpdated: false, error: "unexpected")
        }
    }
}

extension SessionStore {
    /// The write, awaited: nil once durable, or the error.
    func write(_ session: StoredSession, events: [StoredEvent]) async -> Error? {
        await withCheckedContinuation { cont in
            write(session, events: events) { error in cont.resume(returning: error) }
        }
    }
}
