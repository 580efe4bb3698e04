import Foundation
import Logging
import QRGateCore
import QRGateUpstream

/// What a caller asks of a session, wherever it runs: carried out here when this node runs the session,
/// else sent to the node that does (an order over the cluster's bus) and answered with its outcome.
public enum SessionOrder: Sendable, Equatable {
    /// REST init: adds the session (run here), or hands a known one a token / phone number and starts it.
    case initSession(instance: String, token: String?, numberId: String?, phone: String?)
    case refresh
    case pair(phone: String, asAttempt: Bool)
    case disconnect
}

public enum OrderOutcome: Sendable, Equatable {
    case refresh(RefreshOutcome)
    case done
    case notFound
    /// The order could not be carried out or confirmed; the reason is safe to show.
    case unavailable(String)
}

extension SessionRuntime {
    // MARK: Orders

    /// Carries out `order` for the session and calls `done` with the outcome once the change is stored
    /// and this node's copy of the session shows it (so the caller can answer from `registry`).
    public func order(_ id: String, _ order: SessionOrder, retry: Bool = true, waited: Double = 0, isolation: isolated any Actor,
                      done: @escaping (OrderOutcome) -> Void) {
        let isNew: Bool = if case .initSession = order { registry[id] == nil } else { false }
        if isNew, cluster != nil, !checkedNew.contains(id) {
            // Another node may have made it a moment ago (this node reads it off the bus a few ms later): the store
            // says, before this node makes a second one under the same name (bounded, as every read first).
            checkedNew.insert(id)
            return readFirst(id, upTo: nil, isolation: isolation) {
                self.order(id, order, retry: retry, waited: waited, isolation: isolation) { outcome in
                    self.checkedNew.remove(id)
                    done(outcome)
                }
            }
        }
        if runs(id) || isNew { return done(perform(id, order, isolation: isolation)) }
        guard registry[id] != nil else { return done(.notFound) }
        guard let cluster, let owner = owners[id], owner != cluster.nodeId else {
            // Nobody runs it this instant (a lease being taken over, this node's own claim at start-up): the
            // order waits for the session's next node, up to the order timeout.
            if let problem = cluster?.stats().problem {
                return done(.unavailable("session \(id) cannot be reached from this node now: \(problem)"))
            }
            guard waited < orderTimeoutSeconds else {
                return done(.unavailable("no node runs session \(id) right now (its lease lapsed); another node takes it over shortly, try again"))
            }
            _ = timers.schedule(after: 0.1) { [weak self] in
                self?.order(id, order, retry: retry, waited: waited + 0.1, isolation: isolation, done: done)
            }
            return
        }
        var o: [String: JSONValue] = ["session": .string(id)]
        switch order {
        case let .initSession(instance, token, numberId, phone):
            o["op"] = "init"
            o["instance"] = .string(instance)
            if let token { o["token"] = .string(token) }
            if let numberId { o["numberId"] = .string(numberId) }
            if let phone { o["phone"] = .string(phone) }
        case .refresh:
            o["op"] = "refresh"
        case let .pair(phone, asAttempt):
            o["op"] = "pair"
            o["phone"] = .string(phone)
            o["asAttempt"] = .bool(asAttempt)
        case .disconnect:
            o["op"] = "disconnect"
        }
        send(o, to: owner, isolation: isolation) { [weak self] reply in
            guard let self else { return }
            let moved = reply?["outcome"]?.stringValue == "moved"
            // A move: nobody known to run it until the bus says who claimed it (the order waits for that). No answer:
            // again only if another node runs it now (the same node may have carried it out, slowly).
            if moved, self.owners[id] == owner { self.owners[id] = nil }
            guard let reply, !moved, let outcome = Self.outcome(reply) else {
                if retry, moved || (self.owners[id] != nil && self.owners[id] != owner) {
                    return self.order(id, order, retry: false, waited: waited, isolation: isolation, done: done)
                }
                return done(.unavailable(moved ? "session \(id) is moving between nodes; try again"
                                               : "node \(owner), which runs session \(id), did not answer within \(Int(self.orderTimeoutSeconds)) s"))
            }
            // The owner answered once its change was stored; this node shows it once its copy has caught up.
            self.catchUp(id, to: reply["seq"]?.intValue ?? 0, within: self.orderTimeoutSeconds, isolation: isolation) { caught in
                done(caught ? outcome : .unavailable("node \(owner) made the change, but this node has not read it yet (the database is slow); try again"))
            }
        }
    }

    /// The order carried out here (this node runs the session, or makes it).
    func perform(_ id: String, _ order: SessionOrder, isolation: isolated any Actor) -> OrderOutcome {
        switch order {
        case let .initSession(instance, token, numberId, phone):
            if registry[id] == nil {
                add(id: id, instanceName: instance, instanceToken: token, numberId: numberId, phoneNumber: phone, isolation: isolation)
                return .done
            }
            if let token { setInstanceToken(token, for: id, isolation: isolation) }
            if let phone, registry[id]?.phoneNumber != phone {
                // Linking by phone number from now on: a new round, whose QR comes with a pairing code. (The same
                // number again is just a start: a backend calling init on every page load does not replace the
                // code the user is typing.)
                return pair(id, phoneNumber: phone, isolation: isolation).map { .refresh($0) } ?? .notFound
            }
            feed(id, .start, isolation: isolation)
            return .done
        case .refresh:
            return refresh(id, isolation: isolation).map { .refresh($0) } ?? .notFound
        case let .pair(phone, asAttempt):
            return pair(id, phoneNumber: phone, asAttempt: asAttempt, isolation: isolation).map { .refresh($0) } ?? .notFound
        case .disconnect:
            guard registry[id] != nil else { return .notFound }
            feed(id, .disconnect, isolation: isolation)
            return .done
        }
    }

    /// Webhook news for a session another node runs, sent on to it. The upstream's own picture stays
    /// behind (a NOTIFY holds 8000 bytes): the owner draws the code, as it does for a poll's answer.
    func forward(_ event: UpstreamEvent, of id: String, isolation: isolated any Actor) {
        guard let cluster, let owner = owners[id], owner != cluster.nodeId else {
            logger.warning("webhook for session \(id) dropped: no node runs it right now (the next poll of its new owner catches up)")
            return
        }
        var o: [String: JSONValue] = ["session": .string(id), "op": "webhook", "instance": .string(event.instance)]
        switch event.kind {
        case let .qr(qr):
            o["code"] = .string(qr.code)
            if let p = qr.pairingCode { o["pairingCode"] = .string(p) }
        case let .qrLimitReached(reason):
            o["limit"] = .string(String(reason.prefix(500)))
        case let .state(state, reason):
            o["state"] = .string(state.rawValue)
            if let reason { o["statusReason"] = .int(reason) }
        }
        send(o, to: owner, wantsReply: false, isolation: isolation) { _ in }
    }

    private func send(_ o: [String: JSONValue], to node: String, wantsReply: Bool = true, isolation: isolated any Actor,
                      reply: @escaping (JSONValue?) -> Void) {
        guard let cluster else { return reply(nil) }
        nextOrder += 1
        let rid = nextOrder
        if wantsReply {
            let timer = timers.schedule(after: orderTimeoutSeconds) { [weak self] in
                _ = isolation
                self?.pendingOrders.removeValue(forKey: rid)?.done(nil)
            }
            pendingOrders[rid] = (timer, reply)
        }
        let payload = String(decoding: ServerMessage.encode(o), as: UTF8.self)
        let message = ClusterMessage.order(to: node, from: cluster.nodeId, id: wantsReply ? rid : 0, payload: payload)
        Task {
            _ = isolation
            do {
                try await cluster.send(message)
            } catch {
                self.logger.warning("order to node \(node) not sent: \(error)")
                if let p = self.pendingOrders.removeValue(forKey: rid) {
                    self.timers.cancel(p.timer)
                    p.done(nil)
                }
            }
        }
    }

    static func outcome(_ reply: JSONValue) -> OrderOutcome? {
        switch reply["outcome"]?.stringValue {
        case "accepted": .refresh(.accepted)
        case "alreadyConnected": .refresh(.alreadyConnected)
        case "rateLimited": .refresh(.rateLimited(retryAfterSeconds: reply["retryAfter"]?.intValue ?? 1))
        case "noAttemptsLeft": .refresh(.noAttemptsLeft)
        case "done": .done
        case "notFound": .notFound
        case "unavailable": .unavailable(reply["reason"]?.stringValue ?? "the owner node could not carry it out")
        default: nil
        }
    }

    static func encode(_ outcome: OrderOutcome, seq: Int) -> [String: JSONValue] {
        var o: [String: JSONValue] = ["seq": .int(seq)]
        switch outcome {
        case .refresh(.accepted): o["outcome"] = "accepted"
        case .refresh(.alreadyConnected): o["outcome"] = "alreadyConnected"
        case let .refresh(.rateLimited(wait)): o["outcome"] = "rateLimited"; o["retryAfter"] = .int(wait)
        case .refresh(.noAttemptsLeft): o["outcome"] = "noAttemptsLeft"
        case .done: o["outcome"] = "done"
        case .notFound: o["outcome"] = "notFound"
        case let .unavailable(why): o["outcome"] = "unavailable"; o["reason"] = .string(why)
        }
        return o
    }

    /// An order from another node (for a session this node runs), or the reply to one of ours.
    func received(_ message: ClusterMessage, isolation: isolated any Actor) {
        switch message {
        case let .reply(_, rid, payload):
            guard let p = pendingOrders.removeValue(forKey: rid) else { return }
            timers.cancel(p.timer)
            p.done(JSONValue.parse(Array(payload.utf8)))
        case let .order(_, from, rid, payload):
            guard let o = JSONValue.parse(Array(payload.utf8)), let id = o["session"]?.stringValue, let op = o["op"]?.stringValue else {
                return logger.warning("an order from node \(from) could not be read; ignored")
            }
            if op == "webhook" {
                guard runs(id), let event = Self.webhook(o) else { return }
                return deliver(event, to: id, isolation: isolation)
            }
            let order: SessionOrder
            switch op {
            case "init":
                order = .initSession(instance: o["instance"]?.stringValue ?? id, token: o["token"]?.stringValue, numberId: o["numberId"]?.stringValue,
                                     phone: o["phone"]?.stringValue)
            case "refresh": order = .refresh
            case "pair":
                guard let phone = o["phone"]?.stringValue else { return }
                order = .pair(phone: phone, asAttempt: o["asAttempt"]?.boolValue ?? false)
            case "disconnect": order = .disconnect
            default: return logger.warning("unknown order \(op.prefix(40)) from node \(from); ignored")
            }
            let reply: ([String: JSONValue]) -> Void = { [weak self] o in
                guard let self, let cluster = self.cluster, rid != 0 else { return }
                let message = ClusterMessage.reply(to: from, id: rid, payload: String(decoding: ServerMessage.encode(o), as: UTF8.self))
                Task { try? await cluster.send(message) }
            }
            guard runs(id) else {
                // Moved meanwhile: the caller sends it again to the node that runs it now.
                return reply(["outcome": "moved", "seq": .int(0)])
            }
            let outcome = perform(id, order, isolation: isolation)
            // Answered before the caller gives up on this node.
            whenDurable(id, within: max(0.5, orderTimeoutSeconds - 0.5), isolation: isolation) { [weak self] stored in
                guard let self else { return }
                reply(stored ? Self.encode(outcome, seq: self.registry[id]?.seq ?? 0)
                             : Self.encode(.unavailable("the change is not stored yet: \(self.store.problem() ?? "the store is slow")"), seq: 0))
            }
        }
    }

    static func webhook(_ o: JSONValue) -> UpstreamEvent? {
        guard let instance = o["instance"]?.stringValue else { return nil }
        if let code = o["code"]?.stringValue {
            return UpstreamEvent(instance: instance, kind: .qr(UpstreamQR(code: code, pairingCode: o["pairingCode"]?.stringValue)))
        }
        if let limit = o["limit"]?.stringValue { return UpstreamEvent(instance: instance, kind: .qrLimitReached(limit)) }
        if let state = o["state"]?.stringValue.flatMap(UpstreamLinkState.init(rawValue:)) {
            return UpstreamEvent(instance: instance, kind: .state(state, statusReason: o["statusReason"]?.intValue))
        }
        return nil
    }

    // MARK: Following the sessions other nodes run

    /// Calls `done(true)` once this node's copy of the session has reached `seq`, or `done(false)` after `within` s.
    func catchUp(_ id: String, to seq: Int, within seconds: Double, isolation: isolated any Actor, done: @escaping (Bool) -> Void) {
        if (registry[id]?.seq ?? -1) >= seq { return done(true) }
        var fired = false
        nextCatchUp += 1
        let cid = nextCatchUp
        let timer = timers.schedule(after: seconds) { [weak self] in
            _ = isolation
            self?.catchUps[id]?.removeAll { $0.id == cid }
            if self?.catchUps[id]?.isEmpty == true { self?.catchUps[id] = nil }
            if !fired { fired = true; done(false) }
        }
        catchUps[id, default: []].append((cid, seq, { [weak self] ok in
            self?.timers.cancel(timer)
            if !fired { fired = true; done(ok) }
        }))
        want(id, isolation: isolation)
    }

    /// Brings this node's copy of a session up to the store before `done`: one it does not know yet (made on
    /// another node a moment ago), or one behind `seq` (a client back from another node). Bounded: `done` runs
    /// within the order timeout whatever the store does.
    func readFirst(_ id: String, upTo seq: Int?, isolation: isolated any Actor, done: @escaping () -> Void) {
        guard let cluster else { return done() }
        if registry[id] != nil {
            return catchUp(id, to: seq ?? 0, within: min(2, orderTimeoutSeconds), isolation: isolation) { _ in done() }
        }
        var fired = false
        let timer = timers.schedule(after: min(2, orderTimeoutSeconds)) { _ = isolation; if !fired { fired = true; done() } }
        let frames = frames
        Task {
            _ = isolation
            let snaps = (try? await cluster.fetch([id: nil])) ?? []
            let drawn = await Self.draw(snaps, frames: frames)
            self.apply(snaps, drawn: drawn, isolation: isolation)
            self.timers.cancel(timer)
            if !fired { fired = true; done() }
        }
    }

    /// Reads the session from the store soon (with whatever else is wanted by then: one read for many).
    func want(_ id: String, isolation: isolated any Actor) {
        if !syncWanted.keys.contains(id) { syncWanted[id] = .some(registry[id]?.seq) }
        drainSync(isolation: isolation)
    }

    private func drainSync(isolation: isolated any Actor) {
        guard !syncing, !syncWanted.isEmpty, let cluster else { return }
        syncing = true
        let wanted = syncWanted
        syncWanted = [:]
        let frames = frames
        Task {
            _ = isolation
            do {
                let snaps = try await cluster.fetch(wanted)
                let drawn = await Self.draw(snaps, frames: frames)
                self.syncing = false
                self.apply(snaps, drawn: drawn, isolation: isolation)
                self.drainSync(isolation: isolation)
            } catch {
                self.logger.warning("cluster: reading \(wanted.count) session(s) from the store failed (again in 1 s): \(error)")
                for (k, v) in wanted where !self.syncWanted.keys.contains(k) { self.syncWanted[k] = v }
                _ = self.timers.schedule(after: 1) { [weak self] in
                    _ = isolation
                    self?.syncing = false
                    self?.drainSync(isolation: isolation)
                }
            }
        }
    }

    /// The pictures of the QR codes in `snaps`, drawn off the loop (each node draws a code once).
    /// `@concurrent` for the reason `SessionRuntime.input` is: its callers are tasks on a loop.
    @concurrent
    static func draw(_ snaps: [ClusterSnapshot], frames: QRFrameFactory) async -> [String: SessionQR] {
        var codes: Set<String> = []
        for s in snaps {
            // The current QR comes with the pictures its node drew (read with the row): only older codes are drawn.
            let current = s.session.state.qr.flatMap { $0.hasPictures ? $0.code : nil }
            if let qr = s.session.state.qr, !qr.upstreamImage, current == nil { codes.insert(qr.code) }
            for e in s.events where e.action == "qr_generated" {
                if let code = JSONValue.parse(e.payload)?["qrText"]?.stringValue, code != current { codes.insert(code) }
            }
        }
        return await withTaskGroup(of: (String, SessionQR?).self) { group in
            for code in codes {
                group.addTask {
                    // Child tasks run on the global pool: drawn there, off the loop.
                    let qr = UpstreamQR(code: code)
                    return (code, try? frames.frame(for: qr, drawing: .standard))
                }
            }
            var out: [String: SessionQR] = [:]
            for await (code, qr) in group { if let qr { out[code] = qr } }
            return out
        }
    }

    private func pictures(_ drawn: [String: SessionQR]) -> SessionRegistry.Pictures {
        let frames = frames
        return { code, png, pairing in
            let qr = UpstreamQR(code: code, base64: png, pairingCode: pairing)
            return drawn[code].map { QRFrameFactory.paired($0, qr) } ?? (try? frames.frame(for: qr))
        }
    }

    /// Brings this node's copies up to what the store holds (the sessions it follows only).
    func apply(_ snaps: [ClusterSnapshot], drawn: [String: SessionQR], isolation: isolated any Actor) {
        guard let cluster else { return }
        let now = clock.now(), pictures = pictures(drawn)
        for snap in snaps {
            let id = snap.session.id
            owners[id] = snap.owner
            if runs(id) {
                // Our copy is the newest unless another node has taken the session: then it follows from here.
                guard snap.owner != cluster.nodeId, snap.session.seq > (durableSeq[id] ?? 0) else { continue }
                relinquish([id], reason: nil, isolation: isolation)
            }
            registry.follow(snap.session, events: snap.events, now: now, pictures: pictures)
            byInstance[snap.session.instanceName, default: []].insert(id)
            settleCatchUps(id)
        }
    }

    private func settleCatchUps(_ id: String) {
        guard let list = catchUps[id] else { return }
        let seq = registry[id]?.seq ?? -1
        let (ready, waiting) = (list.filter { $0.seq <= seq }, list.filter { $0.seq > seq })
        catchUps[id] = waiting.isEmpty ? nil : waiting
        for w in ready { w.done(true) }
    }

    // MARK: Leases

    /// Sessions whose leases this node took: each catches up (its subscribers here see what they missed),
    /// then runs from its stored state by the same rules as after a restart.
    func adopt(_ snaps: [ClusterSnapshot], isolation: isolated any Actor) {
        guard let cluster, !snaps.isEmpty else { return }
        let frames = frames
        for snap in snaps { adopting[snap.session.id] = snap.session.seq }
        Task {
            _ = isolation
            var snaps = snaps
            // A write this node started before it stopped running a session (a lapse, then its own claim back)
            // may still commit: the session is taken up from what the store holds once it is done.
            let busy = snaps.map(\.session.id).filter { self.writesInFlight[$0, default: 0] > 0 }
            if !busy.isEmpty {
                let until = ContinuousClock.now + .seconds(20)
                while busy.contains(where: { self.writesInFlight[$0, default: 0] > 0 }), ContinuousClock.now < until {
                    try? await Task.sleep(for: .milliseconds(50))
                }
                // Still out after 20 s, or the store cannot say what it holds now: not taken up (the next renewal
                // hands those leases back, and a round claims them again).
                let settled = busy.filter { self.writesInFlight[$0, default: 0] == 0 }
                let fresh = settled.isEmpty ? [] : (try? await cluster.fetch(Dictionary(uniqueKeysWithValues: settled.map { ($0, nil) })))
                snaps = snaps.filter { !busy.contains($0.session.id) } + (fresh ?? [])
                let taken = Set(snaps.map(\.session.id))
                for id in busy where !taken.contains(id) { self.adopting[id] = nil }
            }
            let drawn = await Self.draw(snaps, frames: frames)
            let now = self.clock.now(), pictures = self.pictures(drawn)
            var taken = 0
            for snap in snaps {
                let id = snap.session.id
                // Given up meanwhile (a lost lease, another node's write): not taken up.
                guard self.adopting.removeValue(forKey: id) != nil, !self.owned.contains(id) else { continue }
                self.registry.follow(snap.session, events: snap.events, now: now, pictures: pictures)
                self.byInstance[snap.session.instanceName, default: []].insert(id)
                self.owned.insert(id)
                self.owners[id] = cluster.nodeId
                let seq = self.registry[id]?.seq ?? snap.session.seq
                self.enqueuedSeq[id] = seq
                self.durableSeq[id] = seq
                self.settleCatchUps(id)
                if snap.session.state.status == .pending { self.feed(id, .tick, isolation: isolation) } else { self.reschedule(id, isolation: isolation) }
                taken += 1
            }
            if taken > 0 { self.logger.notice("cluster: node \(cluster.nodeId) runs \(taken) more session(s) (\(self.owned.count) in all)") }
        }
    }

    /// This node stops running these sessions: another took them, or its leases lapsed (`reason`, told to
    /// the sessions' subscribers here). Its timers stop, unstored events are forgotten (nobody saw them), and
    /// its copy follows the store from now on.
    func relinquish(_ ids: [String], reason: String?, isolation: isolated any Actor) {
        var n = 0
        for id in ids { adopting[id] = nil }
        for id in ids where owned.remove(id) != nil {
            n += 1
            if let t = sessionTimers.removeValue(forKey: id) { timers.cancel(t) }
            registry.forgetUnstored(id, after: durableSeq[id] ?? 0)
            enqueuedSeq[id] = nil
            enqueuedState[id] = nil
            durableSeq[id] = nil
            retrying.remove(id)
            unstored.remove(id)
            if let list = durableWaiters.removeValue(forKey: id) { list.forEach { $0.done(false) } }
            if let reason {
                registry.hub.notice(ServerMessage.encode(["action": "paused", "sessionId": .string(id), "message": .string(reason),
                                                          "timestamp": .int(ServerMessage.milliseconds(clock.now()))]), session: id)
            }
            want(id, isolation: isolation)
        }
        if n > 0 { logger.warning("cluster: node \(cluster?.nodeId ?? "?") stopped running \(n) session(s): \(reason ?? "another node took them over")") }
    }

    /// What the cluster reports, on the loop.
    func handle(_ signal: ClusterSignal, isolation: isolated any Actor) {
        guard let cluster else { return }
        switch signal {
        case let .claimed(snaps):
            adopt(snaps, isolation: isolation)
        case let .lost(ids, reason):
            relinquish(ids, reason: reason.isEmpty ? nil : reason, isolation: isolation)
        case let .changed(id, seq, node):
            if node != cluster.nodeId { owners[id] = node }
            if runs(id) || adopting[id] != nil {
                // Someone else wrote it after what this node holds: it lost the lease without noticing yet. (An older
                // commit of the previous node, arriving after this node's claim, changes nothing.)
                guard node != cluster.nodeId, seq > (durableSeq[id] ?? adopting[id] ?? registry[id]?.seq ?? 0) else { return }
                relinquish([id], reason: nil, isolation: isolation)
            }
            // (A write of this node's that committed after it stopped running the session is read back too.)
            if (registry[id]?.seq ?? -1) < seq { want(id, isolation: isolation) }
        case let .resync(table):
            for (id, row) in table {
                if let owner = row.owner { owners[id] = owner }
                if !runs(id), (registry[id]?.seq ?? -1) < row.seq { want(id, isolation: isolation) }
            }
        case let .message(m):
            received(m, isolation: isolation)
        case let .renewed(held):
            // Held but not run (an adoption given up meanwhile): handed back rather than left to lapse unrun.
            let idle = held.filter { !owned.contains($0) && adopting[$0] == nil }
            if !idle.isEmpty { Task { await cluster.giveBack(Array(idle)) } }
        }
    }
}
