import Crypto
import Foundation
import GRDB
import QRGateCore

/// Sessions and their recent events in SQLite (GRDB, WAL). Writes are queued off the event loop,
/// coalesced per session and committed in batches, one transaction each: a session row and its new
/// events land together or not at all.
public final class SQLiteStore: SessionStore, @unchecked Sendable {
    public let path: String
    private let pool: DatabasePool
    private let sealer: Sealer
    private let eventCapacity: Int
    private let eventMaxAge: TimeInterval
    private let eventMaxBytes: Int
    private let queue = DispatchQueue(label: "qrgate.store")
    private let lock = NSLock()
    private var pending: [String: PendingWrite] = [:]
    private var order: [String] = []
    private var draining = false
    private var lastError: String?
    /// What each session row last held, as written by this store (touched only on `queue`): a countdown
    /// changes only `seq`, so the row is not rewritten with its QR images every second.
    private var written: [String: SessionRowContent] = [:]

    private struct PendingWrite {
        var session: StoredSession
        var events: [StoredEvent]
        var completions: [@Sendable (Error?) -> Void]
    }

    /// Opens (creating when needed) the database at `path` and its key file beside it.
    public init(path: String, eventCapacity: Int, eventMaxAgeSeconds: Double, eventMaxBytes: Int = EventLog.defaultMaxBytes) throws {
        self.path = path
        self.eventCapacity = eventCapacity
        eventMaxAge = eventMaxAgeSeconds
        self.eventMaxBytes = eventMaxBytes
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        sealer = try Sealer.loadOrCreateKey(at: path + ".key")
        var config = Configuration()
        config.prepareDatabase { db in
            // WAL (DatabasePool's default) + NORMAL: a commit survives the process being killed.
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        pool = try DatabasePool(path: path, configuration: config)
        try Self.migrator.migrate(pool)
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1-sessions-events") { db in
            try db.create(table: "sessions") { t in
                t.primaryKey("id", .text)
                t.column("instance_name", .text).notNull()
                t.column("instance_token_sealed", .blob)
                t.column("number_id", .text)
                t.column("status", .text).notNull()
                t.column("qr_code_text", .text)
                t.column("qr_png", .text)
                t.column("qr_svg", .text)
                t.column("qr_expires_at", .double)
                t.column("qr_updated_at", .double)
                t.column("attempt", .integer).notNull()
                t.column("last_error", .text)
                t.column("connected_at", .double)
                t.column("last_refresh_at", .double)
                t.column("seq", .integer).notNull()
                t.column("created_at", .double).notNull()
                t.column("last_active_at", .double).notNull()
            }
            try db.create(table: "events") { t in
                t.column("session_id", .text).notNull().references("sessions", onDelete: .cascade)
                t.column("seq", .integer).notNull()
                t.column("action", .text).notNull()
                t.column("payload", .blob).notNull()
                t.column("at", .double).notNull()
                t.primaryKey(["session_id", "seq"])
            }
            try db.create(index: "events_at", on: "events", columns: ["at"])
        }
        m.registerMigration("v2-refresh-cycles") { db in
            try db.create(table: "refresh_cycles") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("started_at", .double).notNull()
                t.column("duration_ms", .integer).notNull()
                t.column("total", .integer).notNull()
                t.column("refreshed", .integer).notNull()
                t.column("failed", .integer).notNull()
            }
        }
        m.registerMigration("v3-pairing") { db in
            // Linking by phone number: the code shown beside the QR, and the number (sealed like the token).
            try db.alter(table: "sessions") { t in
                t.add(column: "qr_pairing_code", .text)
                t.add(column: "phone_number_sealed", .blob)
            }
        }
        return m
    }

    // MARK: Reading

    public func loadAll() throws -> [(StoredSession, [StoredEvent])] {
        try pool.read { db in
            let rows = try Row.fetchAll(db, sql: "SELECT * FROM sessions ORDER BY id")
            return try rows.map { row in
                let s = try session(from: row)
                let events = try Row.fetchAll(db, sql: "SELECT * FROM events WHERE session_id = ? ORDER BY seq", arguments: [s.id]).map { r in
                    StoredEvent(sessionId: r["session_id"], seq: r["seq"], action: r["action"], payload: [UInt8](r["payload"] as Data),
                                at: Date(timeIntervalSince1970: r["at"]))
                }
                return (s, events)
            }
        }
    }

    public func recentCycles(limit: Int) throws -> [StoredCycle] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM refresh_cycles ORDER BY id DESC LIMIT ?", arguments: [limit]).map { r in
                StoredCycle(startedAt: Date(timeIntervalSince1970: r["started_at"]), durationMs: r["duration_ms"], total: r["total"],
                            refreshed: r["refreshed"], failed: r["failed"])
            }
        }
    }

    private func session(from row: Row) throws -> StoredSession {
        func date(_ c: String) -> Date? { (row[c] as Double?).map(Date.init(timeIntervalSince1970:)) }
        let qr: SessionQR? = (row["qr_code_text"] as String?).map {
            // Rows of earlier versions kept the pictures; now only an upstream PNG is kept, the rest is drawn again.
            SessionQR(code: $0, pngDataURL: row["qr_png"] ?? "", svg: row["qr_svg"] ?? "",
                      upstreamImage: (row["qr_png"] as String?) != nil && (row["qr_svg"] as String?) == nil, pairingCode: row["qr_pairing_code"])
        }
        let status = SessionMachine.Status(rawValue: row["status"]) ?? .idle
        let state = SessionMachine.Persisted(status: status, qr: qr, qrExpiresAt: date("qr_expires_at"), qrUpdatedAt: date("qr_updated_at"),
                                             attempt: row["attempt"], connectedAt: date("connected_at"), lastError: row["last_error"],
                                             lastRefreshAt: date("last_refresh_at"))
        let sealed: Data? = row["instance_token_sealed"]
        let sealedPhone: Data? = row["phone_number_sealed"]
        return StoredSession(id: row["id"], instanceName: row["instance_name"], instanceToken: try sealed.map(open),
                             numberId: row["number_id"], phoneNumber: try sealedPhone.map(open), state: state, seq: row["seq"],
                             createdAt: date("created_at") ?? Date(), lastActiveAt: date("last_active_at") ?? Date())
    }

    // MARK: Writing

    public func write(_ session: StoredSession, events: [StoredEvent], completion: @escaping @Sendable (Error?) -> Void) {
        lock.lock()
        if var p = pending[session.id] {
            p.session = session
            p.events += events
            p.completions.append(completion)
            pending[session.id] = p
        } else {
            pending[session.id] = PendingWrite(session: session, events: events, completions: [completion])
            order.append(session.id)
        }
        let start = !draining
        draining = true
        lock.unlock()
        if start { queue.async { self.drain() } }
    }

    /// Commits everything queued, in batches, until the queue is empty.
    private func drain() {
        while true {
            lock.lock()
            let ids = order
            let batch = ids.compactMap { pending[$0] }
            pending.removeAll(keepingCapacity: true)
            order.removeAll(keepingCapacity: true)
            if batch.isEmpty { draining = false; lock.unlock(); return }
            lock.unlock()
            var failure: Error?
            do {
                try pool.write { db in
                    for w in batch { try self.store(w, in: db) }
                }
            } catch {
                failure = error
                written.removeAll() // the rolled-back rows are unknown now: rewrite them whole next time
                lock.lock(); lastError = "\(error)"; lock.unlock()
            }
            if failure == nil { lock.lock(); lastError = nil; lock.unlock() }
            for w in batch { for c in w.completions { c(failure) } }
        }
    }

    private func store(_ w: PendingWrite, in db: Database) throws {
        let s = w.session
        let content = SessionRowContent(s)
        var updated = false
        if written[s.id] == content {
            try db.cachedStatement(sql: "UPDATE sessions SET seq = ?, last_active_at = ? WHERE id = ?")
                           .execute(arguments: [s.seq, s.lastActiveAt.timeIntervalSince1970, s.id])
            updated = db.changesCount == 1
        }
        if !updated {
            try upsert(s, in: db)
            written[s.id] = content
        }
        try append(w.events, of: s, in: db)
    }

    private func upsert(_ s: StoredSession, in db: Database) throws {
        let st = s.state
        func t(_ d: Date?) -> Double? { d?.timeIntervalSince1970 }
        try db.cachedStatement(sql: """
            INSERT INTO sessions (id, instance_name, instance_token_sealed, number_id, status, qr_code_text, qr_png, qr_svg,
                qr_expires_at, qr_updated_at, attempt, last_error, connected_at, last_refresh_at, seq, created_at, last_active_at,
                qr_pairing_code, phone_number_sealed)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET instance_name = excluded.instance_name, instance_token_sealed = excluded.instance_token_sealed,
                number_id = excluded.number_id, status = excluded.status, qr_code_text = excluded.qr_code_text, qr_png = excluded.qr_png,
                qr_svg = excluded.qr_svg, qr_expires_at = excluded.qr_expires_at, qr_updated_at = excluded.qr_updated_at,
                attempt = excluded.attempt, last_error = excluded.last_error, connected_at = excluded.connected_at,
                last_refresh_at = excluded.last_refresh_at, seq = excluded.seq, last_active_at = excluded.last_active_at,
                qr_pairing_code = excluded.qr_pairing_code, phone_number_sealed = excluded.phone_number_sealed
            """).execute(arguments: [s.id, s.instanceName, try s.instanceToken.map(seal), s.numberId, st.status.rawValue, st.qr?.code,
                             // The code, not the pictures (drawn again from it); the upstream's own PNG is passed on as it came.
                             st.qr.flatMap { $0.upstreamImage ? $0.pngDataURL : nil }, nil as String?, t(st.qrExpiresAt), t(st.qrUpdatedAt), st.attempt, st.lastError, t(st.connectedAt),
                             t(st.lastRefreshAt), s.seq, s.createdAt.timeIntervalSince1970, s.lastActiveAt.timeIntervalSince1970,
                             st.qr?.pairingCode, try s.phoneNumber.map(seal)])
    }

    private func append(_ events: [StoredEvent], of s: StoredSession, in db: Database) throws {
        for e in events {
            try db.cachedStatement(sql: "INSERT OR REPLACE INTO events (session_id, seq, action, payload, at) VALUES (?, ?, ?, ?, ?)")
                           .execute(arguments: [e.sessionId, e.seq, e.action, Data(e.payload), e.at.timeIntervalSince1970])
        }
        // A new QR supersedes the older QRs and their pairing codes: a client behind them gets a snapshot,
        // and a fleet rotating QRs every 20 s does not grow the file by one QR per rotation.
        // As the in-memory log does: everything up to the previous QR (or its code) goes, which a restore
        // could not replay anyway (it keeps the contiguous tail).
        if let newest = events.last(where: { $0.action == "qr_generated" }) {
            try db.cachedStatement(sql: """
                DELETE FROM events WHERE session_id = ? AND seq <= (SELECT MAX(seq) FROM events WHERE session_id = ? AND seq < ?
                    AND action IN ('qr_generated', 'pairing_code'))
                """).execute(arguments: [s.id, s.id, newest.seq])
        }
        if !events.isEmpty {
            // Bounded by count and by age: what `since` recovery can still serve.
            try db.cachedStatement(sql: "DELETE FROM events WHERE session_id = ? AND (seq <= ? OR at < ?)")
                           .execute(arguments: [s.id, s.seq - eventCapacity, Date().timeIntervalSince1970 - eventMaxAge])
            // And by bytes, oldest first (the newest stays whatever its size).
            try db.cachedStatement(sql: """
                DELETE FROM events WHERE session_id = ? AND seq < (SELECT MAX(seq) FROM events WHERE session_id = ?) AND seq IN (
                    SELECT seq FROM (SELECT seq, SUM(length(payload)) OVER (ORDER BY seq DESC) AS kept FROM events WHERE session_id = ?)
                    WHERE kept > ?)
                """).execute(arguments: [s.id, s.id, s.id, eventMaxBytes])
        }
    }

    public func recordCycle(_ c: StoredCycle) {
        queue.async { [pool] in
            try? pool.write { db in
                try db.execute(sql: "INSERT INTO refresh_cycles (started_at, duration_ms, total, refreshed, failed) VALUES (?, ?, ?, ?, ?)",
                               arguments: [c.startedAt.timeIntervalSince1970, c.durationMs, c.total, c.refreshed, c.failed])
                try db.execute(sql: "DELETE FROM refresh_cycles WHERE id <= (SELECT MAX(id) FROM refresh_cycles) - 1000")
            }
        }
    }

    public func problem() -> String? {
        lock.lock(); defer { lock.unlock() }
        if let lastError { return "last write failed: \(lastError)" }
        return nil
    }

    public func close() {
        queue.sync {}
        while true {
            lock.lock(); let busy = draining; lock.unlock()
            if !busy { break }
            queue.sync {}
        }
    }

    // MARK: Instance tokens at rest

    private func seal(_ token: String) throws -> Data { try sealer.seal(token) }
    private func open(_ sealed: Data) throws -> String { try sealer.open(sealed) }
}
