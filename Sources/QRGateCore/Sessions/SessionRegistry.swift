import Foundation

/// Every session: its machine, its event numbering and recent log, and the push to the hub.
/// Pure Swift and single-threaded (the event loop owns it); time comes in as `now`.
public final class SessionRegistry {
    public struct Session {
        public let id: String
        public var instanceName: String
        /// The instance's own upstream key. Never sent to clients or logged.
        public var instanceToken: String?
        public var numberId: String?
        /// The phone number it links with by pairing code (digits), if one was given. Never logged whole.
        public var phoneNumber: String?
        public var machine: SessionMachine
        public var seq = 0
        public var log: EventLog
        public let createdAt: Date
        /// When the session last had an event (or was created).
        public var lastActiveAt: Date
        /// While events wait for the store: the state and seq subscribers have been shown (snapshots and
        /// replays are built from it, so none shows a seq before it is stored). Nil when nothing waits.
        public var shown: (machine: SessionMachine, seq: Int)?
        /// The state new subscribers see: `shown` while events wait for the store, else the machine.
        public var visibleMachine: SessionMachine { shown?.machine ?? machine }
        public var visibleSeq: Int { shown?.seq ?? seq }
    }

    public let rules: SessionRules
    public let hub: Hub
    private let logCapacity: Int
    private let logMaxBytes: Int
    public private(set) var sessions: [String: Session] = [:]
    /// Sessions showing a QR, by where their expiry falls in the countdown interval (`countdownSlots` buckets of
    /// it): a countdown tick looks at the buckets its window covers, not at every session. Kept by `rebucket`
    /// after every change of what a session shows.
    private var wheel = [Set<String>](repeating: [], count: SessionRegistry.countdownSlots)
    private var slotOf: [String: Int] = [:]
    public static let countdownSlots = 50
    /// Sessions looked at by countdown ticks so far: the work ticks cost, counted (tests hold it).
    public private(set) var countdownVisits = 0
    /// Called with every event once it is published (metrics, REST waiters).
    public var observer: ((Session, SessionEvent) -> Void)?
    /// With a durable store: events are numbered and logged at once, but reach subscribers and the observer
    /// only when `release(_:through:)` says they are stored, so a seq a client saw is never lost to a crash
    /// and handed to another event after the restart.
    public var holdsUntilStored = false
    private var held: [String: [(publication: Publication, machine: SessionMachine)]] = [:]

    public init(rules: SessionRules, hub: Hub, logCapacity: Int = 256, logMaxBytes: Int = EventLog.defaultMaxBytes) {
        self.rules = rules
        self.hub = hub
        self.logCapacity = logCapacity
        self.logMaxBytes = logMaxBytes
    }

    public subscript(id: String) -> Session? { sessions[id] }

    /// Adds a session (idle). False when the id is taken.
    @discardableResult
    public func create(id: String, instanceName: String, instanceToken: String? = nil, numberId: String? = nil, now: Date) -> Bool {
        guard sessions[id] == nil else { return false }
        sessions[id] = Session(id: id, instanceName: instanceName, instanceToken: instanceToken, numberId: numberId,
                               machine: SessionMachine(rules: rules), log: EventLog(capacity: logCapacity, maxBytes: logMaxBytes), createdAt: now, lastActiveAt: now)
        return true
    }

    /// Puts a stored session back: its machine continues by the same rules, its numbering goes on.
    /// Pictures for a stored code: `(code, the upstream's PNG when it sent one, pairing code)` → the QR, or nil
    /// when it cannot be drawn. The renderer is deterministic, so the store keeps codes, not pictures.
    public typealias Pictures = (_ code: String, _ upstreamPNG: String?, _ pairingCode: String?) -> SessionQR?

    /// Puts a stored session back: its machine continues by the same rules, its numbering goes on. QRs stored
    /// without their pictures are drawn again; `qr_generated` events stored as their code are re-encoded, so a
    /// replay after a restart carries the same pictures. The log keeps the stored events' contiguous tail
    /// (older QR events are dropped at rest once superseded): a `since` before it gets a snapshot.
    public func restore(_ stored: StoredSession, events: [StoredEvent], now: Date, pictures: Pictures) {
        var state = stored.state
        if let qr = state.qr, !qr.hasPictures {
            state.qr = pictures(qr.code, qr.upstreamImage ? qr.pngDataURL : nil, qr.pairingCode)
            if state.qr == nil { state.qrExpiresAt = nil }
        }
        let machine = SessionMachine(rules: rules, restoring: state, now: now)
        var tail: [StoredEvent] = []
        for e in events.reversed() {
            guard e.seq == (tail.first?.seq ?? stored.seq + 1) - 1 else { break }
            tail.insert(e, at: 0)
        }
        var log = EventLog(capacity: logCapacity, maxBytes: logMaxBytes)
        for e in tail {
            if e.action == "qr_generated", let o = JSONValue.parse(e.payload), let code = o["qrText"]?.stringValue, o["qrSvg"] == nil,
               let exp = o["qrExpiresAt"]?.stringValue.flatMap(SessionEventEncoding.date), let attempt = o["attempt"]?.intValue,
               let ms = o["timestamp"]?.intValue, let qr = machine.qr?.code == code ? machine.qr : pictures(code, nil, nil) {
                let at = Date(timeIntervalSince1970: Double(ms) / 1000)
                let event = SessionEvent.qrGenerated(qr, expiresAt: exp, attempt: attempt)
                let frame = Self.frame(event, session: stored.id, seq: e.seq, now: at, maxAttempts: machine.maxAttempts, numberId: stored.numberId)
                log.append(EventLog.Entry(seq: e.seq, action: e.action, frame: frame, event: event, at: at))
            } else {
                log.append(EventLog.Entry(seq: e.seq, action: e.action, bytes: e.payload))
            }
        }
        sessions[stored.id] = Session(id: stored.id, instanceName: stored.instanceName, instanceToken: stored.instanceToken,
                                      numberId: stored.numberId, phoneNumber: stored.phoneNumber, machine: machine,
                                      seq: stored.seq, log: log, createdAt: stored.createdAt, lastActiveAt: stored.lastActiveAt)
        rebucket(stored.id)
    }

    /// A session another node runs, brought up to what that node stored: its state as stored, and its events
    /// after what this node has, numbered as there, logged and published to this node's subscribers (the
    /// same seqs on every node). A session not known here yet is added. If the events do not follow on from
    /// this node's last seq (the store dropped superseded QR events meanwhile), the log restarts at them, so
    /// a `since` before the gap gets a snapshot. Returns whether the session was new here.
    @discardableResult
    public func follow(_ stored: StoredSession, events: [StoredEvent], now: Date, pictures: Pictures) -> Bool {
        let id = stored.id
        let isNew = sessions[id] == nil
        var state = stored.state
        if let qr = state.qr, !qr.hasPictures {
            let current = sessions[id]?.machine.qr
            state.qr = current?.code == qr.code && current?.pairingCode == qr.pairingCode
                ? current : pictures(qr.code, qr.upstreamImage ? qr.pngDataURL : nil, qr.pairingCode)
            if state.qr == nil { state.qrExpiresAt = nil }
        }
        var s = sessions[id] ?? Session(id: id, instanceName: stored.instanceName, instanceToken: stored.instanceToken, numberId: stored.numberId,
                                        phoneNumber: stored.phoneNumber, machine: SessionMachine(rules: rules), seq: 0,
                                        log: EventLog(capacity: logCapacity, maxBytes: logMaxBytes), createdAt: stored.createdAt, lastActiveAt: stored.lastActiveAt)
        let fresh = events.filter { $0.seq > s.seq }.sorted { $0.seq < $1.seq }
        if let first = fresh.first, first.seq != s.seq + 1, !isNew { s.log = EventLog(capacity: logCapacity, maxBytes: logMaxBytes) }
        s.instanceName = stored.instanceName
        s.instanceToken = stored.instanceToken
        s.numberId = stored.numberId
        s.phoneNumber = stored.phoneNumber
        s.machine = SessionMachine(rules: rules, restoring: state, now: now)
        s.shown = nil
        s.lastActiveAt = stored.lastActiveAt
        var publications: [Publication] = []
        for e in fresh {
            let maxAttempts = s.machine.maxAttempts, numberId = s.numberId
            let decoded = SessionEventEncoding.decode(e.payload) { code, _ in
                state.qr?.code == code ? state.qr : pictures(code, nil, nil)
            }
            guard let decoded else {
                // Not one this version can read (a newer node's): passed on as stored.
                s.log.append(EventLog.Entry(seq: e.seq, action: e.action, bytes: e.payload))
                continue
            }
            let (event, at) = decoded
            let frame = Self.frame(event, session: id, seq: e.seq, now: at, maxAttempts: maxAttempts, numberId: numberId)
            s.log.append(EventLog.Entry(seq: e.seq, action: e.action, frame: frame, event: event, at: at))
            let key: String? = switch event {
            case .qrGenerated: "qr:\(id)"
            case .pairingCode: "pc:\(id)"
            default: nil
            }
            let seq = e.seq
            let variant: ((QRFormats) -> [UInt8])? = SessionEventEncoding.carriesQR(event)
                ? { SessionEventEncoding.event(event, session: id, seq: seq, now: at, maxAttempts: maxAttempts, numberId: numberId, formats: $0) }
                : nil
            publications.append(Publication(session: id, seq: seq, event: event, frame: frame, coalesceKey: key, variant: variant))
        }
        s.seq = max(s.seq, stored.seq, fresh.last?.seq ?? 0)
        sessions[id] = s
        held[id] = nil
        rebucket(id)
        if isNew { hub.sessionAdded(id) }
        for p in publications {
            if let s = sessions[id] { observer?(s, p.event) }
            hub.publish(p)
        }
        return isNew
    }

    /// A session this node stopped running: events it numbered but never stored are forgotten (nobody saw
    /// them: they were held until stored), so its numbering continues from what the store has.
    public func forgetUnstored(_ id: String, after seq: Int) {
        held[id] = nil
        defer { rebucket(id) }
        guard var s = sessions[id], s.seq > seq else { sessions[id]?.shown = nil; return }
        if let shown = s.shown { s.machine = shown.machine }
        s.shown = nil
        s.seq = seq
        let kept = s.log.entries(after: 0).filter { $0.seq <= seq }
        s.log = EventLog(capacity: logCapacity, maxBytes: logMaxBytes)
        for e in kept { s.log.append(e) }
        sessions[id] = s
    }

    /// How a logged event is kept at rest: a `qr_generated` as its code (`qrText`) without pictures.
    public func atRest(_ e: EventLog.Entry, of id: String) -> [UInt8] {
        guard case .qrGenerated? = e.event, let event = e.event, let at = e.at, let s = sessions[id] else { return e.bytes }
        return SessionEventEncoding.event(event, session: id, seq: e.seq, now: at, maxAttempts: s.machine.maxAttempts,
                                          numberId: s.numberId, formats: .code)
    }

    /// The stored form of a session.
    public func stored(_ id: String) -> StoredSession? {
        guard let s = sessions[id] else { return nil }
        return StoredSession(id: s.id, instanceName: s.instanceName, instanceToken: s.instanceToken, numberId: s.numberId,
                             phoneNumber: s.phoneNumber, state: s.machine.persisted, seq: s.seq, createdAt: s.createdAt, lastActiveAt: s.lastActiveAt)
    }

    public func setInstanceToken(_ token: String?, for id: String) { sessions[id]?.instanceToken = token }
    public func setPhoneNumber(_ digits: String?, for id: String) { sessions[id]?.phoneNumber = digits }

    /// Feeds an input; numbers, logs and publishes the events; returns the upstream work to do.
    public func apply(_ input: SessionInput, to id: String, now: Date) -> [SessionCommand] {
        guard var s = sessions[id] else { return [] }
        let before = (s.machine, s.seq)
        let (events, commands) = s.machine.handle(input, now: now)
        sessions[id] = s
        publish(events, of: id, now: now, before: before)
        rebucket(id)
        return commands
    }

    public func refresh(_ id: String, now: Date, message: String = SessionMachine.refreshMessage, asAttempt: Bool = false) -> (outcome: RefreshOutcome, commands: [SessionCommand])? {
        guard var s = sessions[id] else { return nil }
        let before = (s.machine, s.seq)
        let r = s.machine.refresh(now: now, message: message, asAttempt: asAttempt)
        sessions[id] = s
        publish(r.events, of: id, now: now, before: before)
        rebucket(id)
        return (r.outcome, r.commands)
    }

    /// What a new subscriber gets first: the missed events when `since` can be served, else a snapshot
    /// (flagged `recovered:false` when `since` was asked for and cannot be).
    public func welcome(session id: String, since: Int?, now: Date, formats: QRFormats = .standard) -> [[UInt8]] {
        // A replay ends with the time left now (countdowns are not in the log); a snapshot carries it.
        if let since, let frames = replay(session: id, since: since, formats: formats) { return frames + [countdown(session: id, now: now)?.bytes].compactMap { $0 } }
        return snapshot(session: id, now: now, formats: formats, recovered: since == nil ? nil : false).map { [$0] } ?? []
    }

    /// The session's countdown now, unnumbered, while it shows a QR.
    public func countdown(session id: String, now: Date) -> (event: SessionEvent, bytes: [UInt8])? {
        guard let s = sessions[id] else { return nil }
        let m = s.visibleMachine
        guard m.status == .pending, let exp = m.qrExpiresAt, exp > now else { return nil }
        let e = SessionEvent.countdown(remaining: m.remaining(at: now), expiresAt: exp)
        return (e, SessionEventEncoding.event(e, session: id, seq: nil, now: now, maxAttempts: m.maxAttempts, numberId: nil))
    }

    /// Where `exp` falls in the countdown interval, in [0, interval).
    private func phase(_ t: Date) -> Double {
        let interval = rules.countdownIntervalSeconds
        let p = t.timeIntervalSince1970.truncatingRemainder(dividingBy: interval)
        return p < 0 ? p + interval : p
    }

    private func slot(atPhase p: Double) -> Int {
        min(Self.countdownSlots - 1, max(0, Int(p / rules.countdownIntervalSeconds * Double(Self.countdownSlots))))
    }

    /// Puts the session in the bucket of the expiry of the QR it shows (none when it shows none).
    private func rebucket(_ id: String) {
        let m = sessions[id]?.visibleMachine
        let now: Int? = m?.status == .pending ? m?.qrExpiresAt.map { slot(atPhase: phase($0)) } : nil
        let was = slotOf[id]
        guard now != was else { return }
        if let was { wheel[was].remove(id) }
        slotOf[id] = now
        if let now { wheel[now].insert(id) }
    }

    /// When the next watched session's whole second comes (its countdown is due), or nil when nobody watches
    /// any session: the loop sleeps until then instead of waking on a fixed beat. Looks at the wheel's buckets
    /// from now on, and stops at the first that holds such a session.
    public func nextCountdown(after now: Date) -> Date? {
        guard hub.watchesAny else { return nil }
        let interval = rules.countdownIntervalSeconds, width = interval / Double(Self.countdownSlots)
        let p = phase(now), current = slot(atPhase: p)
        // The current bucket first (its sessions still to come this interval), then the others in order, then the
        // current one again (its sessions already past: next interval).
        for k in 0...Self.countdownSlots {
            var best: Double?
            for id in wheel[(current + k) % Self.countdownSlots] {
                guard let s = sessions[id], s.visibleMachine.status == .pending, let exp = s.visibleMachine.qrExpiresAt, exp > now,
                      hub.isWatched(id) else { continue }
                var left = exp.timeIntervalSince(now).truncatingRemainder(dividingBy: interval)
                if left <= 0 { left += interval }
                if k == 0 && left > Double(current + 1) * width - p + width { continue }
                best = min(best ?? left, left)
            }
            if let best { return now.addingTimeInterval(best) }
        }
        return nil
    }

    /// Pushes the time left of the sessions that show a QR and that someone watches: computed from
    /// `qrExpiresAt`, not numbered, not stored. Returns how many. Each session ticks on its own whole seconds:
    /// a call takes the sessions whose expiry falls, within the countdown interval, between `since` and `now`
    /// (all of them without `since`), so calls many times per interval spread a fleet's countdowns over it
    /// instead of one burst that the last subscriber waits through, and a late call catches up. A call looks
    /// only at the sessions of the wheel's buckets its window touches (both ends included).
    @discardableResult
    public func tickCountdowns(now: Date, since: Date? = nil) -> Int {
        let interval = rules.countdownIntervalSeconds
        let window = since.map { min(max(0, now.timeIntervalSince($0)), interval) } ?? interval
        let end = phase(now)
        func due(_ exp: Date, shownSince: Date?) -> Bool {
            guard window < interval else { return true }
            // The expiry's phase in the interval, in (end - window, end], wrapping around.
            var d = (end - phase(exp)).truncatingRemainder(dividingBy: interval)
            if d < 0 { d += interval }
            // The whole second crossed must come after the QR appeared: a QR issued inside the window has the
            // phase of its own issue time, where its `qr_generated` already told the time left.
            return d < window && now.addingTimeInterval(-d).timeIntervalSince(shownSince ?? .distantPast) > 0.001
        }
        let width = interval / Double(Self.countdownSlots)
        let first = slot(atPhase: phase(now.addingTimeInterval(-window))), last = slot(atPhase: end)
        let count = window >= interval - 2 * width ? Self.countdownSlots : (last - first + Self.countdownSlots) % Self.countdownSlots + 1
        var n = 0
        for k in 0..<count {
            for id in wheel[(first + k) % Self.countdownSlots] {
                countdownVisits += 1
                guard let s = sessions[id] else { continue }
                let m = s.visibleMachine
                guard m.status == .pending, let exp = m.qrExpiresAt, due(exp, shownSince: m.qrUpdatedAt), hub.isWatched(id),
                      let c = countdown(session: id, now: now) else { continue }
                hub.publish(Publication(session: id, seq: nil, event: c.event, bytes: c.bytes, coalesceKey: "countdown:\(id)"))
                n += 1
            }
        }
        return n
    }

    /// The session's state as one `snapshot` frame.
    public func snapshot(session id: String, now: Date, formats: QRFormats = .standard, recovered: Bool? = nil) -> [UInt8]? {
        guard let s = sessions[id] else { return nil }
        return SessionEventEncoding.snapshot(session: id, machine: s.visibleMachine, seq: s.visibleSeq, now: now, recovered: recovered,
                                             numberId: s.numberId, phoneNumber: s.phoneNumber, formats: formats)
    }

    /// The events after `since`, or nil when the log no longer holds them all (then a snapshot is due).
    public func replay(session id: String, since: Int, formats: QRFormats = .standard) -> [[UInt8]]? {
        guard let s = sessions[id], let missed = s.log.after(since, lastSeq: s.visibleSeq) else { return nil }
        return replay(missed.filter { $0.seq <= s.visibleSeq }, of: s, formats: formats)
    }

    /// The missed frames in the subscriber's formats, or nil when one of them cannot be re-encoded
    /// (restored from the store without its event): the subscriber then gets a snapshot.
    private func replay(_ missed: [EventLog.Entry], of s: Session, formats: QRFormats) -> [[UInt8]]? {
        if formats == .standard { return missed.map(\.bytes) }
        var out: [[UInt8]] = []
        for e in missed {
            guard let event = e.event, let at = e.at else {
                if e.action == "qr_generated" { return nil }
                out.append(e.bytes)
                continue
            }
            out.append(SessionEventEncoding.carriesQR(event)
                ? SessionEventEncoding.event(event, session: s.id, seq: e.seq, now: at, maxAttempts: s.machine.maxAttempts,
                                             numberId: s.numberId, formats: formats)
                : e.bytes)
        }
        return out
    }

    public func nextDeadline(of id: String) -> Date? { sessions[id]?.machine.nextDeadline() }

    /// An event's standard frame: a QR's is encoded when first needed (with its pictures, which a session
    /// nobody watches never needs drawn), any other at once.
    static func frame(_ event: SessionEvent, session id: String, seq: Int, now: Date, maxAttempts: Int, numberId: String?) -> EncodedFrame {
        guard SessionEventEncoding.carriesQR(event) else {
            return EncodedFrame(SessionEventEncoding.event(event, session: id, seq: seq, now: now, maxAttempts: maxAttempts, numberId: numberId))
        }
        return EncodedFrame { SessionEventEncoding.event(event, session: id, seq: seq, now: now, maxAttempts: maxAttempts, numberId: numberId) }
    }

    private func publish(_ events: [SessionEvent], of id: String, now: Date, before: (SessionMachine, Int)) {
        // The first events to wait for the store: subscribers keep seeing the state before them.
        if holdsUntilStored, !events.isEmpty, !isHolding(id) { sessions[id]?.shown = before }
        for event in events {
            guard var s = sessions[id] else { return }
            s.seq += 1
            s.lastActiveAt = now
            let frame = Self.frame(event, session: id, seq: s.seq, now: now, maxAttempts: s.machine.maxAttempts, numberId: s.numberId)
            s.log.append(EventLog.Entry(seq: s.seq, action: event.action, frame: frame, event: event, at: now))
            sessions[id] = s
            // Only the newest QR and its pairing code matter to a peer that is behind (and the newest countdown:
            // tickCountdowns); each replaces its unsent predecessor in place, so the order stays QR, then code.
            let key: String? = switch event {
            case .qrGenerated: "qr:\(id)"
            case .pairingCode: "pc:\(id)"
            default: nil
            }
            let seq = s.seq, maxAttempts = s.machine.maxAttempts, numberId = s.numberId
            let variant: ((QRFormats) -> [UInt8])? = SessionEventEncoding.carriesQR(event)
                ? { SessionEventEncoding.event(event, session: id, seq: seq, now: now, maxAttempts: maxAttempts, numberId: numberId, formats: $0) }
                : nil
            let publication = Publication(session: id, seq: s.seq, event: event, frame: frame, coalesceKey: key, variant: variant)
            if holdsUntilStored {
                hold(publication, machine: s.machine, of: id)
            } else {
                observer?(s, event)
                hub.publish(publication)
            }
        }
    }

    /// Holds an event until it is stored. While the store is away a session goes on rotating QRs: a new QR
    /// replaces the held QRs and pairing codes before it (only the newest matters, as in the outbox; seqs
    /// skipped this way are a gap the protocol allows for these two kinds), and past `logCapacity` held
    /// events the oldest go (they stay in the log for `since`), so memory stays bounded.
    private func hold(_ publication: Publication, machine: SessionMachine, of id: String) {
        var list = held[id, default: []]
        if case .qrGenerated = publication.event {
            list.removeAll {
                switch $0.publication.event {
                case .qrGenerated, .pairingCode: true
                default: false
                }
            }
        }
        list.append((publication, machine))
        if list.count > logCapacity { list.removeFirst(list.count - logCapacity) }
        held[id] = list
    }

    /// Whether some of the session's numbered events wait for the store.
    public func isHolding(_ id: String) -> Bool { !(held[id]?.isEmpty ?? true) }

    /// The sessions with events waiting for the store.
    public var holding: [String] { held.compactMap { $0.value.isEmpty ? nil : $0.key } }

    /// Publishes the session's held events up to `seq` (stored now), in order.
    public func release(_ id: String, through seq: Int) {
        guard var list = held[id] else { return }
        let n = list.prefix { ($0.publication.seq ?? 0) <= seq }.count
        guard n > 0 else { return }
        let out = list.prefix(n)
        list.removeFirst(n)
        held[id] = list.isEmpty ? nil : list
        // The state after the last released event is what subscribers may now be shown (all of it when
        // nothing waits any more).
        if let last = out.last { sessions[id]?.shown = list.isEmpty ? nil : (last.machine, last.publication.seq ?? 0) }
        rebucket(id)
        for p in out {
            if let s = sessions[id] { observer?(s, p.publication.event) }
            hub.publish(p.publication)
        }
    }
}
