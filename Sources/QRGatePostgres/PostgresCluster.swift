import Foundation
import Logging
import PostgresNIO
import QRGateCore
import Synchronization

/// Nodes sharing one PostgreSQL (docs/OPERATIONS.md): leases in `sessions.owner_node` / `lease_until`,
/// renewed by one UPDATE per round; lapsed leases claimed by the live nodes, each taking its share; the bus
/// on one LISTEN/NOTIFY channel (`qrgate`) over a connection of its own, re-opened (with a catch-up read)
/// whenever it drops. Nothing here is home-made where PostgreSQL already does the job: row locks settle
/// who claims a session (`FOR UPDATE SKIP LOCKED`), the write guard settles who may write it, and a NOTIFY
/// sent in a transaction is delivered at commit or never.
///
/// Sendable by its parts: the store (Sendable), and everything mutable in `state` (a Mutex).
public final class PostgresCluster: SessionCluster {
    public var nodeId: String { store.nodeId }
    private let store: PostgresStore
    private let logger: Logger
    private let leaseSeconds: Double
    private let state = Mutex(State())
    private let startedAt = Date()

    private struct State {
        var tasks: [Task<Void, Never>] = []
        var stats = ClusterStats()
        var handedOff: [String: ContinuousClock.Instant] = [:]
        /// The bus's connection, and when this node last heard its own ping on it (a half-open connection hears nothing).
        var busConnection: PostgresConnection?
        var lastPing = ContinuousClock.now
        var pingSent: ContinuousClock.Instant?
        var signal: (@Sendable (ClusterSignal) -> Void)?
        var lastRenewal = ContinuousClock.now
        var healthy = true
    }

    /// Renewals and claims run this often (20 % of `cluster.leaseSeconds`); a lease lasts 70 %, and a node
    /// that has not renewed for 60 % stops running its sessions: it always stops before another may start.
    var period: Double { leaseSeconds * 0.2 }
    var giveUpAfter: Double { leaseSeconds * 0.6 }

    public init(store: PostgresStore, leaseSeconds: Double, logger: Logger) {
        self.store = store
        self.leaseSeconds = leaseSeconds
        self.logger = logger
    }

    public func start(_ signal: @escaping @Sendable (ClusterSignal) -> Void) {
        state.withLock { $0.signal = signal; $0.lastRenewal = .now }
        let listener = Task.detached { [self] in await listen(signal) }
        let leases = Task.detached { [self] in await leaseRounds(signal) }
        state.withLock { $0.tasks = [listener, leases] }
        logger.notice("cluster: node \(nodeId), leases of \(String(format: "%.1f", store.leaseTTL)) s renewed every \(String(format: "%.1f", period)) s")
    }

    public func stop() {
        let tasks = state.withLock { $0.tasks }
        tasks.forEach { $0.cancel() }
    }

    public func stats() -> ClusterStats { state.withLock { $0.stats } }

    // MARK: The bus

    /// LISTENs on a connection of its own; after every (re)connect, reads every session's seq and owner so
    /// nothing committed while it was away is missed.
    private func listen(_ signal: @escaping @Sendable (ClusterSignal) -> Void) async {
        let quiet: Logger = {
            var l = logger
            l.logLevel = max(logger.logLevel, .warning)
            return l
        }()
        while !Task.isCancelled {
            do {
                let conn = try await PostgresStore.withTimeout(PostgresStore.timeoutSeconds) { [store] in
                    try await PostgresConnection.connect(configuration: store.connectionConfiguration, id: 1, logger: quiet)
                }
                defer { Task { try? await conn.close() } }
                try await conn.listen(on: "qrgate") { notes in
                    state.withLock { $0.busConnection = conn; $0.lastPing = .now }
                    // What was committed while this node was not listening: every session's seq, once listening.
                    signal(.resync(try await seqs(conn)))
                    for try await note in notes {
                        if Task.isCancelled { break }
                        if let s = parse(note.payload) { signal(s) }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("cluster: the bus connection failed (reconnecting in 1 s): \(PostgresStore.describe(error))")
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    private func seqs(_ conn: PostgresConnection) async throws -> [String: (seq: Int, owner: String?)] {
        var out: [String: (seq: Int, owner: String?)] = [:]
        for try await (id, seq, owner) in try await conn.query("SELECT id, seq, owner_node FROM sessions", logger: logger).decode((String, Int, String?).self) {
            out[id] = (seq, owner)
        }
        return out
    }

    /// `c ID SEQ NODE MS` (a commit), `o TO FROM RID JSON` (an order), `r TO RID JSON` (a reply).
    func parse(_ payload: String) -> ClusterSignal? {
        let parts = payload.split(separator: " ", maxSplits: 4, omittingEmptySubsequences: false).map(String.init)
        switch parts.first {
        case "p":
            if parts.count >= 2, parts[1] == nodeId { state.withLock { $0.lastPing = .now } }
            return nil
        case "c" where parts.count == 5:
            guard let seq = Int(parts[2]), let ms = Int(parts[4]) else { return nil }
            let lag = max(0, Date().timeIntervalSince1970 - Double(ms) / 1000)
            state.withLock { $0.stats.busMessages += 1; if parts[3] != nodeId { $0.stats.busLagSeconds = lag } }
            return .changed(session: parts[1], seq: seq, node: parts[3])
        case "o" where parts.count == 5 && parts[1] == nodeId:
            guard let rid = Int(parts[3]), let json = unseal(parts[4]) else { return nil }
            state.withLock { $0.stats.busMessages += 1 }
            return .message(.order(to: parts[1], from: parts[2], id: rid, payload: json))
        case "r":
            let r = payload.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
            guard r.count == 4, r[1] == nodeId, let rid = Int(r[2]), let json = unseal(r[3]) else { return nil }
            state.withLock { $0.stats.busMessages += 1 }
            return .message(.reply(to: r[1], id: rid, payload: json))
        default:
            return nil
        }
    }

    /// Orders and replies are sealed with the store's key: an init order may carry an instance token, a pair
    /// order a phone number, and NOTIFY payloads can be read by any LISTENer of the database and may be logged.
    public func send(_ message: ClusterMessage) async throws {
        let payload = switch message {
        case let .order(to, from, id, json): "o \(to) \(from) \(id) \(try store.sealer.seal(json).base64EncodedString())"
        case let .reply(to, id, json): "r \(to) \(id) \(try store.sealer.seal(json).base64EncodedString())"
        }
        guard payload.utf8.count < 8000 else { throw PostgresStoreError.unavailable("a bus message of \(payload.utf8.count) bytes is over NOTIFY's 8000") }
        try await PostgresStore.withTimeout(PostgresStore.timeoutSeconds) { [store] in
            for try await _ in try await store.pool.query("SELECT count(pg_notify('qrgate', \(payload)))", logger: store.log).decode(Int.self) {}
        }
    }

    private func unseal(_ text: String) -> String? {
        guard let data = Data(base64Encoded: text), let json = try? store.sealer.open(data) else {
            logger.warning("cluster: a bus message could not be opened (another seal key?); ignored")
            return nil
        }
        return json
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    public func fetch(_ wanted: [String: Int?]) async throws -> [ClusterSnapshot] {
        try await store.read(wanted)
    }

    // MARK: Leases

    private func leaseRounds(_ signal: @escaping @Sendable (ClusterSignal) -> Void) async {
        var first = true
        let watchdog = Task.detached { [self] in await giveUpWatch(signal) }
        defer { watchdog.cancel() }
        while !Task.isCancelled {
            let started = ContinuousClock.now
            do {
                // While healthy a round must end before the give-up deadline; once given up, it takes its time.
                let (healthy, last) = state.withLock { ($0.healthy, $0.lastRenewal) }
                let left = giveUpAfter - Self.seconds(ContinuousClock.now - last)
                let budget = healthy ? max(0.2, min(PostgresStore.timeoutSeconds, left)) : PostgresStore.timeoutSeconds
                let (kept, claimed, handoff) = try await round(first: first, budget: budget, started: started)
                first = false
                let recovered = state.withLock { s -> Bool in
                    s.stats.renewals += 1
                    s.stats.problem = nil
                    defer { s.healthy = true }
                    return !s.healthy
                }
                if recovered { logger.notice("cluster: leases renewed again") }
                if !kept.lost.isEmpty { signal(.lost(kept.lost, reason: "")) }
                if !claimed.isEmpty {
                    state.withLock { $0.stats.claims += claimed.count }
                    signal(.claimed(claimed))
                }
                signal(.renewed(kept.held))
                do {
                    if !handoff.isEmpty { try await handOff(handoff, signal) }
                    try await pingBus()
                } catch {
                    logger.warning("cluster: a hand-off or bus ping failed (the leases are renewed): \(PostgresStore.describe(error))")
                }
            } catch {
                let why = PostgresStore.describe(error)
                state.withLock { $0.stats.renewalFailures += 1; $0.stats.problem = "leases not renewed: \(why)" }
            }
            let spent = ContinuousClock.now - started
            let wait = Duration.seconds(period) - spent
            if wait > .zero { try? await Task.sleep(for: wait) }
        }
    }

    /// Apart from the rounds, which can hang on a database that stopped answering (PostgresNIO cannot cancel a
    /// query): once no round has renewed the leases for 60 % of `cluster.leaseSeconds`, this node stops running
    /// its sessions, before any of their leases can lapse and another node take them.
    private func giveUpWatch(_ signal: @escaping @Sendable (ClusterSignal) -> Void) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            let due = state.withLock { s -> Bool in
                guard s.healthy, ContinuousClock.now - s.lastRenewal > .seconds(giveUpAfter) else { return false }
                s.healthy = false
                if s.stats.problem == nil { s.stats.problem = "leases not renewed: no answer from PostgreSQL" }
                return true
            }
            guard due else { continue }
            let why = state.withLock { $0.stats.problem } ?? "leases not renewed"
            let all = store.dropLeases()
            logger.error("cluster: leases not renewed for \(Int(giveUpAfter)) s (\(why)); this node stops running its \(all.count) session(s) until the database answers")
            signal(.lost(all, reason: "This gateway node lost its database connection; the session's updates pause until it returns or another node takes the session over."))
        }
    }

    /// One round: heartbeat, renewals (what this node holds and what it lost), then claims of lapsed leases.
    private func round(first: Bool, budget: Double, started: ContinuousClock.Instant) async throws -> (kept: (held: Set<String>, lost: [String]), claimed: [ClusterSnapshot], handoff: [String]) {
        let me = nodeId, ttl = store.leaseTTL
        let believed = store.leasedSessions()
        // What this node handed off lately is left to the others (no tug of war); after two leases it may come back.
        let gaveAway = state.withLock { s -> [String] in
            let now = ContinuousClock.now
            s.handedOff = s.handedOff.filter { now - $0.value < .seconds(leaseSeconds * 2) }
            return Array(s.handedOff.keys)
        }
        let (held, ids, live, handoff) = try await PostgresStore.withTimeout(budget) { [store, logger, startedAt] in
            try await store.pool.withConnection { conn in
                try await conn.query("""
                    INSERT INTO qrgate_nodes (node_id, started_at, heartbeat_at) VALUES (\(me), \(startedAt), now())
                    ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()
                    """, logger: logger)
                var held: Set<String> = []
                let mine = Array(believed)
                for try await id in try await conn.query("""
                    UPDATE sessions SET lease_until = now() + make_interval(secs => \(ttl)) WHERE owner_node = \(me) AND id = ANY(\(mine)::text[])
                    RETURNING id
                    """, logger: logger).decode(String.self) { held.insert(id) }
                // Lapsed leases, shared among the live nodes: each takes at most its share per round.
                var orphans = 0, live = 1, total = 0
                for try await (o, l, t) in try await conn.query("""
                    SELECT (SELECT count(*) FROM sessions WHERE (owner_node IS NULL OR lease_until < now()
                                OR (owner_node = \(me) AND NOT id = ANY(\(mine)::text[]))) AND NOT id = ANY(\(gaveAway)::text[])),
                           (SELECT count(*) FROM qrgate_nodes WHERE heartbeat_at > now() - make_interval(secs => \(ttl))),
                           (SELECT count(*) FROM sessions)
                    """, logger: logger).decode((Int, Int, Int).self) { orphans = o; live = max(1, l); total = t }
                var ids: [String] = []
                // Its share of the orphans, and never past its fair share of all sessions: the live nodes' fair shares
                // add up to at least every session, so every orphan finds a node, and none ends with far fewer.
                let room = max(0, (total + live - 1) / live - held.count)
                if orphans > 0, room > 0 {
                    let share = min((orphans + live - 1) / live, room)
                    for try await id in try await conn.query("""
                        UPDATE sessions SET owner_node = \(me), lease_until = now() + make_interval(secs => \(ttl))
                        WHERE id IN (SELECT id FROM sessions
                                     WHERE (owner_node IS NULL OR lease_until < now() OR (owner_node = \(me) AND NOT id = ANY(\(mine)::text[])))
                                         AND NOT id = ANY(\(gaveAway)::text[])
                                     ORDER BY id LIMIT \(share) FOR UPDATE SKIP LOCKED)
                        RETURNING id
                        """, logger: logger).decode(String.self) { ids.append(id) }
                }
                if !ids.isEmpty {
                    // Every node learns who runs these now (their next orders go here), before any new event.
                    let ms = Int(Date().timeIntervalSince1970 * 1000)
                    for try await _ in try await conn.query("""
                        SELECT count(pg_notify('qrgate', 'c ' || id || ' ' || seq || ' ' || \(me) || ' ' || \(ms)))
                        FROM sessions WHERE id = ANY(\(ids)::text[])
                        """, logger: logger).decode(Int.self) {}
                }
                if first { try await conn.query("DELETE FROM qrgate_nodes WHERE heartbeat_at < now() - interval '1 day'", logger: logger) }
                // More than its share (a node joined, or this one took many new sessions): the surplus goes back, to
                // be claimed by the others at their next round. Never the sessions just claimed, never in a first round.
                let fair = (total + live - 1) / live
                let surplus = first || live < 2 ? 0 : held.count - fair - max(1, fair / 10)
                let handoff = surplus > 0 ? Array(held.sorted().suffix(surplus)) : []
                return (held, ids, live, handoff)
            }
        }
        // Renewed as of this round's start: the read of the claimed sessions below does not count against it.
        let stillHealthy = state.withLock { s -> Bool in
            s.stats.liveNodes = live
            s.lastRenewal = max(s.lastRenewal, started)
            return s.healthy
        }
        // Held before this round and not renewed in it: another node has them now.
        let lost = believed.subtracting(held).subtracting(ids)
        store.updateLeases(lost: lost, claimed: Set(ids))
        // Given up meanwhile (the watchdog): the claims are not taken up; they lapse, and a round claims them again.
        let claimed = ids.isEmpty || !stillHealthy ? [] : try await store.read(Dictionary(uniqueKeysWithValues: ids.map { ($0, nil) }))
        if !stillHealthy { store.updateLeases(lost: Set(ids), claimed: []) }
        if !ids.isEmpty { logger.notice("cluster: node \(me) claimed \(ids.count) session(s) whose leases had lapsed") }
        return ((held, Array(lost).sorted()), claimed, handoff)
    }

    /// Sends this node a ping over the bus; a bus connection that has not carried one for three rounds is closed,
    /// so the listener opens a new one (and reads what it missed) instead of waiting on a half-open socket.
    private func pingBus() async throws {
        let me = nodeId
        let (stale, conn) = state.withLock { s in
            (s.pingSent.map { $0 > s.lastPing && ContinuousClock.now - $0 > .seconds(period * 3 + 1) } ?? false, s.busConnection)
        }
        if stale, let conn {
            logger.warning("cluster: the bus carried nothing for \(Int(period * 3 + 1)) s; reconnecting it")
            state.withLock { $0.busConnection = nil; $0.lastPing = .now; $0.pingSent = nil }
            try? await conn.close()
        }
        for try await _ in try await store.pool.query("SELECT count(pg_notify('qrgate', 'p ' || \(me)))", logger: store.log).decode(Int.self) {}
        // The oldest ping not heard back yet.
        state.withLock { s in if s.pingSent.map({ $0 <= s.lastPing }) ?? true { s.pingSent = .now } }
    }

    /// Leases this node holds but does not run (a claim it gave up before taking the session up): handed back,
    /// so a node (this one, perhaps) claims and runs them.
    public func giveBack(_ sessions: [String]) async {
        guard !sessions.isEmpty else { return }
        store.updateLeases(lost: Set(sessions), claimed: [])
        let me = nodeId
        _ = try? await PostgresStore.withTimeout(PostgresStore.timeoutSeconds) { [store] in
            try await store.pool.query("""
                UPDATE sessions SET lease_until = now() - interval '1 second' WHERE owner_node = \(me) AND id = ANY(\(sessions)::text[])
                """, logger: store.log)
        }
        logger.notice("cluster: node \(me) gave back \(sessions.count) lease(s) it held without running the session(s)")
    }

    /// Stops running these sessions here first, then hands their leases back.
    private func handOff(_ ids: [String], _ signal: @escaping @Sendable (ClusterSignal) -> Void) async throws {
        signal(.lost(ids, reason: ""))
        store.updateLeases(lost: Set(ids), claimed: [])
        // The loop stops them (its timers, its writes) before anyone else may claim them.
        try await Task.sleep(for: .milliseconds(200))
        let me = nodeId
        _ = try await PostgresStore.withTimeout(PostgresStore.timeoutSeconds) { [store] in
            try await store.pool.query("""
                UPDATE sessions SET lease_until = now() - interval '1 second' WHERE owner_node = \(me) AND id = ANY(\(ids)::text[])
                """, logger: store.log)
        }
        state.withLock { s in
            s.stats.handoffs += ids.count
            for id in ids { s.handedOff[id] = .now }
        }
        logger.notice("cluster: node \(me) handed \(ids.count) session(s) to the other nodes (more than its share)")
    }

    /// Hands every lease back (a clean stop): this node stops running its sessions first, then another node claims
    /// them at its next round (this node's late writes fail: the lease is over).
    public func releaseAll() async {
        let me = nodeId
        // No round may claim the sessions back while they are handed over.
        let tasks = state.withLock { $0.tasks }
        tasks.forEach { $0.cancel() }
        let held = store.dropLeases()
        state.withLock { $0.signal }?(.lost(held, reason: ""))
        try? await Task.sleep(for: .milliseconds(300))
        _ = try? await PostgresStore.withTimeout(PostgresStore.timeoutSeconds) { [store] in
            try await store.pool.query("UPDATE sessions SET lease_until = now() - interval '1 second' WHERE owner_node = \(me)", logger: store.log)
            try await store.pool.query("DELETE FROM qrgate_nodes WHERE node_id = \(me)", logger: store.log)
        }
        _ = store.dropLeases()
    }
}

