import Crypto
import Foundation
import Logging
import PostgresNIO
import QRGateCore
import QRGateStore
import Synchronization

/// Sessions and their recent events in PostgreSQL (`store.mode = postgres`), through PostgresNIO's
/// pooled client. Like the SQLite store, writes are queued off the event loop, coalesced per session and
/// committed in batches, one transaction each: a session row, its new events and its `evolution_instances`
/// row land together or not at all. Schema changes are numbered migrations, applied under an advisory lock
/// so several nodes starting at once apply each one once.
///
/// Sendable by its parts: PostgresNIO's client is Sendable, everything mutable is in `state` (a Mutex).
public final class PostgresStore: SessionStore {
    private let client: PostgresClient
    private let runner: Task<Void, Never>
    private let probe = Mutex<Task<Void, Never>?>(nil)
    /// Seals tokens and phone numbers at rest, and the bus's orders (which may carry them).
    let sealer: Sealer
    private let logger: Logger
    private let eventCapacity: Int
    private let eventMaxAge: TimeInterval
    private let eventMaxBytes: Int
    /// This node's name in the leases (`sessions.owner_node`): a row is written only by the node that holds it.
    public let nodeId: String
    /// How long a lease lasts from its last renewal (70 % of `cluster.leaseSeconds`).
    public let leaseTTL: Double
    /// A batch, a probe or a query that waits longer than this fails (PostgresNIO itself would queue a
    /// request for a minute while the database is away; a node must notice sooner).
    static let timeoutSeconds: Double = 5
    private let state = Mutex(State())

    private struct State {
        var pending: [String: PendingWrite] = [:]
        var order: [String] = []
        var draining = false
        var lastError: String?
        var unreachable: String?
        /// What each row last held as this store wrote it: a countdown-only change rewrites only `seq`.
        var written: [String: SessionRowContent] = [:]
        /// Sessions this node holds the lease of, as far as its writes and claims know (the cluster renews these).
        var leased: Set<String> = []
        /// When the batch being committed started (a commit that never ends would hold every later write back).
        var batchStarted: ContinuousClock.Instant?
        /// Sessions whose row a write in progress inserted (their lease is this node's once it commits).
        var inserted: Set<String> = []
    }

    private struct PendingWrite: Sendable {
        var session: StoredSession
        var events: [StoredEvent]
        var completions: [@Sendable (Error?) -> Void]
    }

    private init(client: PostgresClient, runner: Task<Void, Never>, sealer: Sealer, logger: Logger, eventCapacity: Int, eventMaxAge: TimeInterval,
                 eventMaxBytes: Int, nodeId: String, leaseTTL: Double, connection: PostgresConnection.Configuration) {
        self.nodeId = nodeId
        self.leaseTTL = leaseTTL
        self.connectionConfiguration = connection
        self.eventMaxBytes = eventMaxBytes
        self.client = client
        self.runner = runner
        self.sealer = sealer
        self.logger = logger
        self.eventCapacity = eventCapacity
        self.eventMaxAge = eventMaxAge
    }

    /// A store with nothing to write would not notice the database leaving: /readyz asks `problem()`,
    /// which a probe every few seconds keeps current.
    private func startProbe() {
        let task = Task.detached { [weak self] in
            while !Task.isCancelled {
                guard let self else { return }
                let outcome: String?
                do {
                    _ = try await Self.withTimeout(Self.timeoutSeconds) { [client] in try await client.query("SELECT 1") }
                    outcome = nil
                } catch {
                    outcome = Self.describe(error)
                }
                self.state.withLock { $0.unreachable = outcome }
                try? await Task.sleep(for: .seconds(outcome == nil ? 5 : 1))
            }
        }
        probe.withLock { $0 = task }
    }

    /// Connects, applies the migrations and reads (or makes) the seal key, over one connection of its own
    /// (a refused or unreachable database fails start-up at once, with the reason, instead of the pool
    /// retrying for a minute); then starts the pool the store works with.
    public static func open(url: String, sealKey: String, eventCapacity: Int, eventMaxAgeSeconds: Double,
                            eventMaxBytes: Int = EventLog.defaultMaxBytes, nodeId: String = PostgresStore.defaultNodeId(),
                            leaseSeconds: Double = 10, logger: Logger) async throws -> PostgresStore {
        var pgLogger = logger
        pgLogger.logLevel = max(logger.logLevel, .warning) // the pool logs every failed reconnect at info
        let quiet = pgLogger
        let target = try target(url: url)
        let key: Data
        do {
            key = try await withTimeout(timeoutSeconds * 2) {
                let conn = try await PostgresConnection.connect(configuration: target.connection, id: 0, logger: quiet)
                do {
                    let key = try await conn.withTransaction(logger: quiet) { conn in
                        try await Self.migrate(conn, logger: quiet)
                        return try await Self.sealKey(configured: sealKey, conn, logger: quiet)
                    }
                    try? await conn.close()
                    return key
                } catch {
                    try? await conn.close()
                    throw error
                }
            }
        } catch {
            throw PostgresStoreError.unavailable("\(masked(url)): \(describe(error))")
        }
        if sealKey.isEmpty {
            logger.notice("store.sealKey is empty: instance tokens are sealed with a key kept in the database (set store.sealKey to keep it apart)")
        }
        let client = PostgresClient(configuration: target.pool, backgroundLogger: quiet)
        let runner = Task.detached { await client.run() }
        let store = PostgresStore(client: client, runner: runner, sealer: try Sealer(bytes: key), logger: quiet,
                                  eventCapacity: eventCapacity, eventMaxAge: eventMaxAgeSeconds, eventMaxBytes: eventMaxBytes,
                                  nodeId: nodeId, leaseTTL: leaseSeconds * 0.7, connection: target.connection)
        store.startProbe()
        return store
    }

    /// The host name, the process id and a random suffix: unique among live nodes, new with every start.
    public static func defaultNodeId() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "node"
        let clean = String(host.filter { $0.isLetter || $0.isNumber || $0 == "-" }.prefix(40))
        return "\(clean.isEmpty ? "node" : clean)-\(getpid())-\(String(UInt16.random(in: 0...UInt16.max), radix: 16))"
    }

    /// What a dedicated connection (the bus's LISTEN) connects with.
    let connectionConfiguration: PostgresConnection.Configuration
    var pool: PostgresClient { client }
    var log: Logger { logger }

    /// `postgres://user:password@host:port/db?sslmode=…` as PostgresNIO's configurations: the pool's, and
    /// one connection's (for the migrations).
    static func target(url: String) throws -> (pool: PostgresClient.Configuration, connection: PostgresConnection.Configuration) {
        if let why = Config.postgresURLProblem(url) { throw PostgresStoreError.badURL(why) }
        let c = URLComponents(string: url)!
        let mode = c.queryItems?.last(where: { $0.name == "sslmode" })?.value ?? "disable"
        let host = c.host!, port = c.port ?? 5432, user = c.user ?? "postgres"
        let database = c.path.count > 1 ? String(c.path.dropFirst()) : nil
        let poolTLS: PostgresClient.Configuration.TLS, connectionTLS: PostgresConnection.Configuration.TLS
        switch mode {
        case "require":
            poolTLS = .require(.makeClientConfiguration())
            connectionTLS = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
        case "prefer":
            poolTLS = .prefer(.makeClientConfiguration())
            connectionTLS = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
        default:
            poolTLS = .disable
            connectionTLS = .disable
        }
        var pool = PostgresClient.Configuration(host: host, port: port, username: user, password: c.password, database: database, tls: poolTLS)
        pool.options.connectTimeout = .seconds(Int64(timeoutSeconds))
        pool.options.maximumConnections = 8
        // The server ends what runs too long: a statement, a wait for a lock, a transaction left open.
        let ms = Int(timeoutSeconds * 1000)
        pool.options.additionalStartupParameters = [("statement_timeout", "\(ms)"), ("lock_timeout", "\(ms)"),
                                                    ("idle_in_transaction_session_timeout", "\(ms * 3)")]
        var connection = PostgresConnection.Configuration(host: host, port: port, username: user, password: c.password, database: database,
                                                          tls: connectionTLS)
        connection.options.connectTimeout = .seconds(Int64(timeoutSeconds))
        return (pool, connection)
    }

    /// The URL with its password masked, for logs.
    public static func masked(_ url: String) -> String {
        guard var c = URLComponents(string: url), let p = c.password else { return url }
        c.password = Secret.mask(p)
        return c.string ?? "postgres://…"
    }

    // MARK: Schema

    /// Numbered migrations: each runs once, in order, in the transaction that records it.
    static let migrations: [(version: Int, statements: [String])] = [
        (1, [
            """
            CREATE TABLE sessions (
                id text PRIMARY KEY, instance_name text NOT NULL, instance_token_sealed bytea, number_id text,
                phone_number_sealed bytea, status text NOT NULL, qr_code_text text, qr_png text, qr_pairing_code text,
                qr_expires_at timestamptz, qr_updated_at timestamptz, attempt integer NOT NULL, last_error text,
                connected_at timestamptz, last_refresh_at timestamptz, seq bigint NOT NULL,
                created_at timestamptz NOT NULL, last_active_at timestamptz NOT NULL)
            """,
            """
            CREATE TABLE events (
                session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE, seq bigint NOT NULL,
                action text NOT NULL, payload bytea NOT NULL, created_at timestamptz NOT NULL,
                PRIMARY KEY (session_id, seq))
            """,
            "CREATE INDEX events_created_at ON events (created_at)",
            """
            CREATE TABLE refresh_cycles (
                id bigserial PRIMARY KEY, started_at timestamptz NOT NULL, duration_ms integer NOT NULL,
                total integer NOT NULL, refreshed integer NOT NULL, failed integer NOT NULL)
            """,
            // The seed system's table, kept current in the same transactions: tools that read it keep working.
            """
            CREATE TABLE evolution_instances (
                session_id text PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE, instance_name text NOT NULL,
                instance_status text NOT NULL, qr_code text, last_qr_update timestamptz, qr_expires_at timestamptz,
                attempt integer NOT NULL, pairing_code text, updated_at timestamptz NOT NULL DEFAULT now())
            """,
            "CREATE INDEX evolution_instances_instance_name ON evolution_instances (instance_name)",
            "CREATE TABLE qrgate_settings (name text PRIMARY KEY, value bytea NOT NULL)",
        ]),
        // Several nodes: who runs each session, until when; and the nodes alive.
        (2, [
            "ALTER TABLE sessions ADD COLUMN owner_node text, ADD COLUMN lease_until timestamptz",
            "CREATE INDEX sessions_owner_node ON sessions (owner_node)",
            "CREATE TABLE qrgate_nodes (node_id text PRIMARY KEY, started_at timestamptz NOT NULL, heartbeat_at timestamptz NOT NULL)",
        ]),
        // The current QR's pictures as the node that runs the session drew them: the other nodes read them with the
        // row instead of drawing every new QR again (a fleet's refresh is thousands of pictures).
        (3, [
            // With the code they picture: a row whose code an older node changed without them is drawn again.
            "ALTER TABLE sessions ADD COLUMN qr_svg text, ADD COLUMN qr_png_drawn text, ADD COLUMN qr_pictures_code text",
        ]),
    ]

    static func migrate(_ conn: PostgresConnection, logger: Logger) async throws {
        // One node at a time (released at commit); the others then find the versions applied.
        try await conn.query("SELECT pg_advisory_xact_lock(\(Int(0x7172_6761_7465)))", logger: logger)
        try await conn.query("CREATE TABLE IF NOT EXISTS qrgate_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                             logger: logger)
        var current = 0
        for try await v in try await conn.query("SELECT COALESCE(MAX(version), 0) FROM qrgate_schema", logger: logger).decode(Int.self) {
            current = v
        }
        for m in migrations where m.version > current {
            for sql in m.statements { try await conn.query(PostgresQuery(unsafeSQL: sql), logger: logger) }
            try await conn.query("INSERT INTO qrgate_schema (version) VALUES (\(m.version))", logger: logger)
            logger.notice("store: PostgreSQL schema migrated to version \(m.version)")
        }
    }

    static func sealKey(configured: String, _ conn: PostgresConnection, logger: Logger) async throws -> Data {
        var key: Data?
        if !configured.isEmpty {
            guard let data = Data(base64Encoded: configured), data.count == 32 else { throw SealerError.badKey }
            key = data
        } else {
            try await conn.query("INSERT INTO qrgate_settings (name, value) VALUES ('seal_key', \(Sealer.newKeyBytes())) ON CONFLICT (name) DO NOTHING",
                                 logger: logger)
            for try await data in try await conn.query("SELECT value FROM qrgate_settings WHERE name = 'seal_key'", logger: logger).decode(Data.self) {
                key = data
            }
        }
        guard let key else { throw PostgresStoreError.unavailable("the seal key row is missing") }
        // Tokens sealed with one key cannot be opened with another: the first key's fingerprint is kept, and a
        // node started with a different one stops here, saying so, instead of failing on the first token.
        let fingerprint = Data(SHA256.hash(data: key).prefix(8))
        try await conn.query("INSERT INTO qrgate_settings (name, value) VALUES ('seal_key_fingerprint', \(fingerprint)) ON CONFLICT (name) DO NOTHING",
                             logger: logger)
        for try await kept in try await conn.query("SELECT value FROM qrgate_settings WHERE name = 'seal_key_fingerprint'", logger: logger).decode(Data.self)
        where kept != fingerprint {
            throw PostgresStoreError.sealKeyMismatch(configured: !configured.isEmpty)
        }
        return key
    }

    // MARK: Reading

    public func loadAll() async throws -> [(StoredSession, [StoredEvent])] {
        try await read(nil).map { ($0.session, $0.events) }
    }

    /// Sessions with their owners, and their events after the seq given for each (nil: every kept event);
    /// `wanted` nil: every session.
    func read(_ wanted: [String: Int?]?) async throws -> [ClusterSnapshot] {
        let all = wanted == nil
        let ids = wanted.map { Array($0.keys) } ?? []
        return try await Self.withTimeout(Self.timeoutSeconds * 6) { [self] in
            try await client.withConnection { conn in
                // The rows first, then their events up to each row's seq: a row and its events are committed together,
                // so every event up to the row's seq is there (unless dropped since, a gap the follower handles), and
                // an event committed after the row was read waits for its own notification instead of being skipped.
                var out: [ClusterSnapshot] = []
                let sr = try await conn.query("""
                    SELECT id, instance_name, instance_token_sealed, number_id, phone_number_sealed, status, qr_code_text, qr_png,
                        qr_pairing_code, qr_expires_at, qr_updated_at, attempt, last_error, connected_at, last_refresh_at, seq,
                        created_at, last_active_at, owner_node,
                        CASE WHEN qr_pictures_code = qr_code_text THEN qr_svg END, CASE WHEN qr_pictures_code = qr_code_text THEN qr_png_drawn END
                    FROM sessions WHERE \(all) OR id = ANY(\(ids)::text[]) ORDER BY id
                    """, logger: logger)
                for try await row in sr.decode((String, String, Data?, String?, Data?, String, String?, String?, String?, Date?, Date?,
                                                 Int, String?, Date?, Date?, Int, Date, Date, String?, String?, String?).self) {
                    let (id, instance, token, numberId, phone, status, code, png, pairing, expires, updated,
                         attempt, lastError, connectedAt, lastRefreshAt, seq, createdAt, lastActiveAt, owner, svg, drawn) = row
                    let qr = code.map { SessionQR(code: $0, pngDataURL: png ?? drawn ?? "", svg: svg ?? "", upstreamImage: png != nil, pairingCode: pairing) }
                    let state = SessionMachine.Persisted(status: SessionMachine.Status(rawValue: status) ?? .idle, qr: qr, qrExpiresAt: expires,
                                                         qrUpdatedAt: updated, attempt: attempt, connectedAt: connectedAt, lastError: lastError,
                                                         lastRefreshAt: lastRefreshAt)
                    let s = StoredSession(id: id, instanceName: instance, instanceToken: try token.map(sealer.open), numberId: numberId,
                                          phoneNumber: try phone.map(sealer.open), state: state, seq: seq, createdAt: createdAt,
                                          lastActiveAt: lastActiveAt)
                    out.append(ClusterSnapshot(session: s, events: [], owner: owner))
                }
                guard !out.isEmpty else { return [] }
                let rowIds = out.map(\.session.id), upto = out.map(\.session.seq)
                let after = rowIds.map { (wanted?[$0] ?? nil) ?? -1 }
                var events: [String: [StoredEvent]] = [:]
                let er = try await conn.query("""
                    SELECT e.session_id, e.seq, e.action, e.payload, e.created_at
                    FROM unnest(\(rowIds)::text[], \(after)::bigint[], \(upto)::bigint[]) AS w(id, after, upto)
                    JOIN events e ON e.session_id = w.id AND e.seq > w.after AND e.seq <= w.upto
                    ORDER BY e.session_id, e.seq
                    """, logger: logger)
                for try await (id, seq, action, payload, at) in er.decode((String, Int, String, Data, Date).self) {
                    events[id, default: []].append(StoredEvent(sessionId: id, seq: seq, action: action, payload: [UInt8](payload), at: at))
                }
                for i in out.indices { out[i].events = events[out[i].session.id] ?? [] }
                return out
            }
        }
    }

    public func recentCycles(limit: Int) async throws -> [StoredCycle] {
        try await Self.withTimeout(Self.timeoutSeconds) { [self] in
            var out: [StoredCycle] = []
            let rows = try await client.query("SELECT started_at, duration_ms, total, refreshed, failed FROM refresh_cycles ORDER BY id DESC LIMIT \(limit)",
                                              logger: logger)
            for try await (at, ms, total, refreshed, failed) in rows.decode((Date, Int, Int, Int, Int).self) {
                out.append(StoredCycle(startedAt: at, durationMs: ms, total: total, refreshed: refreshed, failed: failed))
            }
            return out
        }
    }

    // MARK: Writing

    public func write(_ session: StoredSession, events: [StoredEvent], completion: @escaping @Sendable (Error?) -> Void) {
        let start = state.withLock { s -> Bool in
            if var p = s.pending[session.id] {
                p.session = session
                p.events += events
                p.completions.append(completion)
                s.pending[session.id] = p
            } else {
                s.pending[session.id] = PendingWrite(session: session, events: events, completions: [completion])
                s.order.append(session.id)
            }
            defer { s.draining = true }
            return !s.draining
        }
        if start { Task.detached { await self.drain() } }
    }

    /// Commits everything queued, in batches, until the queue is empty (one drainer at a time, so the
    /// writes of a session reach the database in the order they were made).
    private func drain() async {
        while true {
            let (batch, known) = state.withLock { s -> ([PendingWrite], [String: SessionRowContent]) in
                // At most `batchSessions` per transaction: a fleet's refresh cycle (or the backlog after an
                // outage) commits in several, each well inside the statement timeout.
                let ids = s.order.prefix(Self.batchSessions)
                let batch = ids.compactMap { s.pending[$0] }
                for id in ids { s.pending[id] = nil }
                s.order.removeFirst(ids.count)
                if batch.isEmpty { s.draining = false }
                s.batchStarted = batch.isEmpty ? nil : .now
                return (batch, s.written)
            }
            if batch.isEmpty { return }
            var outcome: [String: Error] = [:]
            var wrote: [String: SessionRowContent] = [:]
            do {
                wrote = try await commit(batch, known: known)
            } catch where batch.count > 1 {
                // One session's write can fail for itself (text PostgreSQL refuses, say): then each goes alone,
                // so the others are stored and only that one waits.
                for w in batch {
                    do {
                        wrote.merge(try await commit([w], known: known)) { $1 }
                    } catch {
                        outcome[w.session.id] = Self.leaseLost(in: error) ?? error
                    }
                }
            } catch {
                outcome[batch[0].session.id] = Self.leaseLost(in: error) ?? error
            }
            // A lease that moved is not the database failing: the session's new node writes it from now on.
            let failures = outcome.filter { !($0.value is LeaseLost) }
            let reason = failures.first.map { "session \($0.key): \(Self.describe($0.value))" }
            state.withLock { s in
                if let reason {
                    s.lastError = reason
                } else {
                    s.lastError = nil
                }
                for id in outcome.keys { s.written[id] = nil } // rolled back: rewrite those rows whole next time
                for (id, e) in outcome where e is LeaseLost { s.leased.remove(id) }
                for w in batch {
                    if s.inserted.remove(w.session.id) != nil, outcome[w.session.id] == nil { s.leased.insert(w.session.id) }
                }
                s.written.merge(wrote) { $1 }
            }
            if let reason { logger.error("store: \(failures.count) of \(batch.count) session writes failed: \(reason)") }
            for w in batch { for c in w.completions { c(outcome[w.session.id]) } }
        }
    }

    /// Sessions written in one transaction at most.
    static let batchSessions = 200

    /// One transaction for these sessions. PostgreSQL ends a statement after `timeoutSeconds` itself
    /// (`statement_timeout`, set for every connection): a query cannot be cancelled from here, so that is
    /// what bounds a stalled write; the outer timeout only catches a connection that never comes.
    private func commit(_ batch: [PendingWrite], known: [String: SessionRowContent]) async throws -> [String: SessionRowContent] {
        try await Self.withTimeout(Self.timeoutSeconds * 3) { [self] in
            try await client.withTransaction(logger: logger) { conn in
                var wrote: [String: SessionRowContent] = [:]
                for w in batch {
                    if let content = try await self.store(w, known: known[w.session.id], on: conn) { wrote[w.session.id] = content }
                }
                // The bus: every node hears of these changes once they are committed (a NOTIFY in a transaction
                // is delivered at its commit, and never if it rolls back). Session and seq only; nodes read the rest.
                let ms = Int(Date().timeIntervalSince1970 * 1000)
                let notes = batch.map { "c \($0.session.id) \($0.session.seq) \(self.nodeId) \(ms)" }
                for try await _ in try await conn.query("SELECT count(pg_notify('qrgate', p)) FROM unnest(\(notes)::text[]) AS p", logger: logger).decode(Int.self) {}
                return wrote
            }
        }
    }

    /// One session's row, events and `evolution_instances` row; returns the row content when it was
    /// written whole.
    private func store(_ w: PendingWrite, known: SessionRowContent?, on conn: PostgresConnection) async throws -> SessionRowContent? {
        let s = w.session
        let content = SessionRowContent(s)
        var wroteRow: SessionRowContent?
        var updated = false
        if known == content {
            let r = try await conn.query("UPDATE sessions SET seq = \(s.seq), last_active_at = \(s.lastActiveAt) WHERE id = \(s.id) AND owner_node = \(nodeId) AND lease_until > now() RETURNING id",
                                         logger: logger)
            for try await _ in r.decode(String.self) { updated = true }
        }
        if !updated {
            try await upsert(s, on: conn)
            try await upsertInstanceRow(s, on: conn)
            wroteRow = content
        }
        try await append(w.events, of: s, on: conn)
        return wroteRow
    }

    private func upsert(_ s: StoredSession, on conn: PostgresConnection) async throws {
        let st = s.state
        // The code, not the pictures (drawn again from it); the upstream's own PNG is passed on as it came.
        let png = st.qr.flatMap { $0.upstreamImage ? $0.pngDataURL : nil }
        let svg = st.qr.flatMap { $0.svg.isEmpty ? nil : $0.svg }, drawn = st.qr.flatMap { $0.upstreamImage || $0.pngDataURL.isEmpty ? nil : $0.pngDataURL }
        let token = try s.instanceToken.map(sealer.seal), phone = try s.phoneNumber.map(sealer.seal)
        // A new session's row takes its lease; an existing one is written only by the node that holds it (a
        // node whose lease moved meanwhile gets no row back: LeaseLost, and nothing of this write is kept).
        var kept = false
        for try await (_, fresh) in try await conn.query("""
            INSERT INTO sessions (id, instance_name, instance_token_sealed, number_id, phone_number_sealed, status, qr_code_text, qr_png,
                qr_pairing_code, qr_expires_at, qr_updated_at, attempt, last_error, connected_at, last_refresh_at, seq, created_at, last_active_at,
                owner_node, lease_until, qr_svg, qr_png_drawn, qr_pictures_code)
            VALUES (\(s.id), \(s.instanceName), \(token), \(s.numberId), \(phone), \(st.status.rawValue), \(st.qr?.code), \(png),
                \(st.qr?.pairingCode), \(st.qrExpiresAt), \(st.qrUpdatedAt), \(st.attempt), \(st.lastError), \(st.connectedAt),
                \(st.lastRefreshAt), \(s.seq), \(s.createdAt), \(s.lastActiveAt), \(nodeId), now() + make_interval(secs => \(leaseTTL)), \(svg), \(drawn), \(st.qr?.code))
            ON CONFLICT (id) DO UPDATE SET instance_name = excluded.instance_name, instance_token_sealed = excluded.instance_token_sealed,
                number_id = excluded.number_id, phone_number_sealed = excluded.phone_number_sealed, status = excluded.status,
                qr_code_text = excluded.qr_code_text, qr_png = excluded.qr_png, qr_pairing_code = excluded.qr_pairing_code,
                qr_expires_at = excluded.qr_expires_at, qr_updated_at = excluded.qr_updated_at, attempt = excluded.attempt,
                last_error = excluded.last_error, connected_at = excluded.connected_at, last_refresh_at = excluded.last_refresh_at,
                seq = excluded.seq, last_active_at = excluded.last_active_at, qr_svg = excluded.qr_svg, qr_png_drawn = excluded.qr_png_drawn,
                qr_pictures_code = excluded.qr_pictures_code
            WHERE sessions.owner_node = \(nodeId) AND sessions.lease_until > now()
            RETURNING id, (xmax = 0)
            """, logger: logger).decode((String, Bool).self) {
            kept = true
            // A new row: its lease is this node's from now on (an update only keeps a lease the rounds already know of).
            if fresh { _ = state.withLock { $0.inserted.insert(s.id) } }
        }
        guard kept else { throw LeaseLost(session: s.id) }
    }

    /// The seed's `evolution_instances` row (the columns of docs/SUPABASE.md), as the Realtime endpoint
    /// shows it: while a QR is being replaced (pending, none shown) the row keeps the old one, so a
    /// refresh is one UPDATE carrying the new QR. Never a token.
    private func upsertInstanceRow(_ s: StoredSession, on conn: PostgresConnection) async throws {
        let st = s.state
        let status = switch st.status {
        case .pending: "connecting"
        case .connected: "open"
        default: "close"
        }
        let picture = st.qr.map(\.pngDataURL).flatMap { $0.isEmpty ? nil : $0 }
        try await conn.query("""
            INSERT INTO evolution_instances (session_id, instance_name, instance_status, qr_code, last_qr_update, qr_expires_at, attempt, pairing_code)
            VALUES (\(s.id), \(s.instanceName), \(status), \(picture), \(st.qrUpdatedAt), \(st.qrExpiresAt), \(st.attempt), \(st.qr?.pairingCode))
            ON CONFLICT (session_id) DO UPDATE SET instance_name = excluded.instance_name, instance_status = excluded.instance_status,
                qr_code = CASE WHEN excluded.instance_status = 'connecting' AND excluded.qr_code IS NULL THEN evolution_instances.qr_code ELSE excluded.qr_code END,
                last_qr_update = CASE WHEN excluded.instance_status = 'connecting' AND excluded.qr_code IS NULL THEN evolution_instances.last_qr_update ELSE excluded.last_qr_update END,
                qr_expires_at = CASE WHEN excluded.instance_status = 'connecting' AND excluded.qr_code IS NULL THEN evolution_instances.qr_expires_at ELSE excluded.qr_expires_at END,
                pairing_code = CASE WHEN excluded.instance_status = 'connecting' AND excluded.qr_code IS NULL THEN evolution_instances.pairing_code ELSE excluded.pairing_code END,
                attempt = excluded.attempt, updated_at = now()
            WHERE (evolution_instances.instance_name, evolution_instances.instance_status, evolution_instances.qr_code, evolution_instances.attempt,
                   evolution_instances.pairing_code, evolution_instances.qr_expires_at, evolution_instances.last_qr_update)
                IS DISTINCT FROM (excluded.instance_name, excluded.instance_status,
                   CASE WHEN excluded.instance_status = 'connecting' AND excluded.qr_code IS NULL THEN evolution_instances.qr_code ELSE excluded.qr_code END,
                   excluded.attempt,
                   CASE WHEN excluded.instance_status = 'connecting' AND excluded.qr_code IS NULL THEN evolution_instances.pairing_code ELSE excluded.pairing_code END,
                   CASE WHEN excluded.instance_status = 'connecting' AND excluded.qr_code IS NULL THEN evolution_instances.qr_expires_at ELSE excluded.qr_expires_at END,
                   CASE WHEN excluded.instance_status = 'connecting' AND excluded.qr_code IS NULL THEN evolution_instances.last_qr_update ELSE excluded.last_qr_update END)
            """, logger: logger)
    }

    private func append(_ events: [StoredEvent], of s: StoredSession, on conn: PostgresConnection) async throws {
        for e in events {
            try await conn.query("""
                INSERT INTO events (session_id, seq, action, payload, created_at) VALUES (\(e.sessionId), \(e.seq), \(e.action), \(Data(e.payload)), \(e.at))
                ON CONFLICT (session_id, seq) DO UPDATE SET action = excluded.action, payload = excluded.payload, created_at = excluded.created_at
                """, logger: logger)
        }
        // As the in-memory log does: a new QR supersedes the older QRs and their pairing codes.
        if let newest = events.last(where: { $0.action == "qr_generated" }) {
            try await conn.query("""
                DELETE FROM events WHERE session_id = \(s.id) AND seq <= (SELECT MAX(seq) FROM events WHERE session_id = \(s.id)
                    AND seq < \(newest.seq) AND action IN ('qr_generated', 'pairing_code'))
                """, logger: logger)
        }
        if !events.isEmpty {
            // Bounded by count and by age: what `since` recovery can still serve.
            try await conn.query("DELETE FROM events WHERE session_id = \(s.id) AND (seq <= \(s.seq - eventCapacity) OR created_at < \(Date().addingTimeInterval(-eventMaxAge)))",
                                 logger: logger)
            // And by bytes, oldest first (the newest stays whatever its size).
            try await conn.query("""
                DELETE FROM events WHERE session_id = \(s.id) AND seq < (SELECT MAX(seq) FROM events WHERE session_id = \(s.id)) AND seq IN (
                    SELECT seq FROM (SELECT seq, SUM(octet_length(payload)) OVER (ORDER BY seq DESC) AS kept FROM events WHERE session_id = \(s.id)) t
                    WHERE kept > \(eventMaxBytes))
                """, logger: logger)
        }
    }

    public func recordCycle(_ c: StoredCycle) {
        Task.detached { [self] in
            do {
                try await Self.withTimeout(Self.timeoutSeconds) { [self] in
                    try await client.withTransaction(logger: logger) { conn in
                        try await conn.query("""
                            INSERT INTO refresh_cycles (started_at, duration_ms, total, refreshed, failed)
                            VALUES (\(c.startedAt), \(c.durationMs), \(c.total), \(c.refreshed), \(c.failed))
                            """, logger: logger)
                        try await conn.query("DELETE FROM refresh_cycles WHERE id <= (SELECT MAX(id) FROM refresh_cycles) - 1000", logger: logger)
                    }
                }
            } catch {
                logger.warning("store: a refresh cycle was not recorded: \(Self.describe(error))")
            }
        }
    }

    /// The sessions this node holds leases on, as its writes and claims know.
    func leasedSessions() -> Set<String> { state.withLock { $0.leased } }

    func updateLeases(lost: Set<String>, claimed: Set<String>) {
        state.withLock { $0.leased.subtract(lost); $0.leased.formUnion(claimed) }
    }

    /// Forgets every lease (they lapse in the database by themselves); returns what was held.
    func dropLeases() -> [String] {
        state.withLock { s in defer { s.leased = [] }; return Array(s.leased).sorted() }
    }

    public func problem() -> String? {
        state.withLock { s in
            if let u = s.unreachable { return "PostgreSQL unreachable: \(u)" }
            if let started = s.batchStarted, ContinuousClock.now - started > .seconds(Self.timeoutSeconds * 4) {
                return "a write has been running for more than \(Int(Self.timeoutSeconds * 4)) s (later writes wait behind it)"
            }
            if let e = s.lastError { return "last write failed: \(e)" }
            return nil
        }
    }

    /// Waits (up to twice the timeout) for queued writes, then closes the client.
    public func close() {
        let deadline = Date().addingTimeInterval(Self.timeoutSeconds * 2)
        while state.withLock({ $0.draining }) && Date() < deadline { usleep(5_000) }
        probe.withLock { $0?.cancel() }
        runner.cancel()
    }

    // MARK: Helpers

    /// The LeaseLost a transaction's closure threw, if that is what failed.
    static func leaseLost(in error: Error) -> LeaseLost? {
        if let e = error as? LeaseLost { return e }
        if let e = error as? PostgresTransactionError { return e.closureError.flatMap { leaseLost(in: $0) } }
        return nil
    }

    /// PostgresNIO's errors say little in `description` on purpose; the server's message is what helps.
    static func describe(_ error: Error) -> String {
        if let e = error as? PSQLError {
            if let message = e.serverInfo?[.message] { return message }
            return "\(e.code)"
        }
        if let e = error as? PostgresTransactionError {
            for inner in [e.beginError, e.closureError, e.commitError].compactMap({ $0 }) { return describe(inner) }
        }
        return "\(error)"
    }

    static func withTimeout<T: Sendable>(_ seconds: Double, _ work: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await work() }
            group.addTask {
                try await Task.sleep(for: .seconds(seconds))
                throw PostgresStoreError.timedOut(seconds)
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }
}

public enum PostgresStoreError: Error, CustomStringConvertible {
    case badURL(String)
    case unavailable(String)
    case timedOut(Double)
    case sealKeyMismatch(configured: Bool)
    public var description: String {
        switch self {
        case let .sealKeyMismatch(configured):
            configured
                ? "store.sealKey is not the key this database's tokens were sealed with (its fingerprint differs): use that key, or remove store.sealKey if the database kept its own"
                : "this database's tokens were sealed with a store.sealKey: set the same store.sealKey"
        case let .badURL(why): "store.url \(why)"
        case let .unavailable(why): "PostgreSQL unavailable: \(why)"
        case let .timedOut(s): "no answer from PostgreSQL within \(Int(s)) s"
        }
    }
}
