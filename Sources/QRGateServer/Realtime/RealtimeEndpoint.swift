import Crypto
import Foundation
import Logging
import QRGateCore

/// The Supabase Realtime protocol (Phoenix channels, vsn 1.0.0, JSON) for the part frontends of the
/// original design use: `postgres_changes` on the virtual table `public.evolution_instances`, broadcast
/// of QRGate events on `realtime:session:ID`, and presence there. docs/SUPABASE.md has the subset.
/// A hub consumer like any other: each event is formatted once per topic and the same bytes go to
/// every member. Not Sendable: owned by the gateway actor, on its loop.
public final class RealtimeEndpoint {
    public static let path = "/realtime/v1/websocket"
    static let table = "evolution_instances"
    /// Channels one socket may join (each costs memory and fan-out work).
    static let maxChannels = 100

    struct Binding {
        let id: Int
        let event: String   // *, INSERT, UPDATE, DELETE
        let schema: String
        let table: String
        let filter: String?
        let column: String?
        let value: String?

        func matches(type: String, row: [String: JSONValue]) -> Bool {
            guard event == "*" || event == type else { return false }
            guard let column, let value else { return true }
            return row[column]?.stringValue == value
        }

        var json: JSONValue {
            var o: [String: JSONValue] = ["id": .int(id), "event": .string(event), "schema": .string(schema), "table": .string(table)]
            if let filter { o["filter"] = .string(filter) }
            return .object(o)
        }
    }

    struct Channel {
        let topic: String
        /// Where its members are kept: the topic itself for a session's topic (access is checked at join),
        /// else the topic within the joiner's scope, so one tenant's broadcast topics never reach another's.
        var memberKey: String = ""
        let joinRef: JSONValue
        var bindings: [Binding]
        var broadcastSelf: Bool
        var presenceKey: String
        /// Presence messages go only to channels that asked for them (`config.presence.enabled`; a client
        /// that does not say, as before realtime-js sent the flag, gets them). Tracking turns it on.
        var presenceEnabled = true
        var tracked: JSONValue?
        /// The session a `realtime:session:ID` topic is about.
        var session: String? {
            topic.hasPrefix("realtime:session:") ? String(topic.dropFirst("realtime:session:".count)) : nil
        }
    }

    struct Connection {
        var principal: Principal?
        var channels: [String: Channel] = [:]
        /// Phoenix serializer 2.0.0 (realtime-js's default since 2.91.0): messages as JSON arrays
        /// `[join_ref, ref, topic, event, payload]`, user broadcasts as binary frames. Else 1.0.0 objects.
        var v2 = false
    }

    let server: LWSServer
    let auth: Authenticator
    let registry: SessionRegistry
    let demoMode: Bool
    let clock: any GatewayClock
    let logger: Logger
    private var connections: [ConnectionID: Connection] = [:]
    /// Who joined each topic: an event reaches its members without a walk over every connection.
    private var members: [String: Set<ConnectionID>] = [:]
    private var lastRows: [String: Row] = [:]
    private var nextBindingID = 1000

    init(server: LWSServer, auth: Authenticator, registry: SessionRegistry, demoMode: Bool, clock: any GatewayClock, logger: Logger) {
        self.clock = clock
        self.server = server
        self.auth = auth
        self.registry = registry
        self.demoMode = demoMode
        self.logger = logger
    }

    // MARK: Socket life

    /// Like Supabase's gateway: a missing or wrong `apikey` never gets a socket.
    /// On the handshake's own loop: only Sendable inputs.
    static func shouldAccept(_ info: WebSocketInfo, auth: Authenticator, demoMode: Bool) -> (status: Int, reason: String)? {
        if let vsn = info.query["vsn"], vsn != "1.0.0", vsn != "2.0.0" { return (400, "vsn must be 1.0.0 or 2.0.0") }
        guard let key = info.query["apikey"] ?? info.authorization.flatMap(Gateway.bearer), !key.isEmpty else {
            return demoMode ? nil : (401, "No API key found in request")
        }
        if case let .failure(e) = auth.authenticate(key) {
            return demoMode ? nil : (401, e == .unknownKey ? "Invalid API key" : "Invalid JWT: \(e)")
        }
        return nil
    }

    func opened(_ id: ConnectionID, info: WebSocketInfo) {
        var principal: Principal? = demoMode ? Principal(role: .admin) : nil
        if let key = info.query["apikey"] ?? info.authorization.flatMap(Gateway.bearer), case let .success(p) = auth.authenticate(key) {
            principal = principal.map { $0.role >= p.role ? $0 : p } ?? p
        }
        connections[id] = Connection(principal: principal, v2: info.query["vsn"] == "2.0.0")
    }

    func closed(_ id: ConnectionID) {
        guard let c = connections.removeValue(forKey: id) else { return }
        for ch in c.channels.values { removeMember(id, ch) }
        for ch in c.channels.values where ch.tracked != nil { presenceLeave(ch, from: id) }
    }

    // MARK: Messages

    func received(_ id: ConnectionID, message: [UInt8], binary: Bool) {
        guard let c = connections[id] else { return }
        let m: [String: JSONValue]
        if binary {
            guard c.v2 else {
                return send(id, topic: "phoenix", event: "phx_error", payload: ["reason": .string("binary frames need vsn=2.0.0")], ref: .null)
            }
            switch RealtimeWire.decodeUserBroadcastPush(message) {
            case let .success(push):
                return clientBroadcast(id, topic: push.topic, event: push.event, payload: push.payload, ref: push.ref.map { .string($0) } ?? .null)
            case let .failure(why):
                return send(id, topic: "phoenix", event: "phx_error", payload: ["reason": .string("malformed binary message: \(why.reason)")], ref: .null)
            }
        }
        guard let json = JSONValue.parse(message), json.depth <= 12 else {
            return send(id, topic: "phoenix", event: "phx_error", payload: ["reason": .string("malformed message: not JSON")], ref: .null)
        }
        if c.v2 {
            guard case let .array(a) = json, a.count == 5 else {
                return send(id, topic: "phoenix", event: "phx_error", payload: ["reason": .string("malformed message: expected [join_ref, ref, topic, event, payload]")], ref: .null)
            }
            m = ["join_ref": a[0], "ref": a[1], "topic": a[2], "event": a[3], "payload": a[4]]
        } else {
            guard case let .object(o) = json else {
                return send(id, topic: "phoenix", event: "phx_error", payload: ["reason": .string("malformed message: expected a JSON object {topic, event, payload, ref}")], ref: .null)
            }
            m = o
        }
        let ref = m["ref"] ?? .null
        guard let topic = m["topic"]?.stringValue, !topic.isEmpty, topic.utf8.count <= 255,
              let event = m["event"]?.stringValue, !event.isEmpty else {
            return reply(id, topic: m["topic"]?.stringValue ?? "phoenix", ref: ref, joinRef: m["join_ref"], error: "message needs string topic and event")
        }
        let payload = m["payload"]?.objectValue ?? [:]
        switch (topic, event) {
        case ("phoenix", "heartbeat"):
            reply(id, topic: "phoenix", ref: ref, joinRef: nil, ok: [:])
        case (_, "phx_join"):
            join(id, topic: topic, payload: payload, ref: ref, joinRef: m["join_ref"] ?? ref)
        case (_, "phx_leave"):
            leave(id, topic: topic, ref: ref)
        case (_, "access_token"):
            accessToken(id, topic: topic, payload: payload, ref: ref)
        case (_, "broadcast"):
            guard let userEvent = payload["event"]?.stringValue else {
                return reply(id, topic: topic, ref: ref, joinRef: m["join_ref"], error: "broadcast needs payload.event")
            }
            clientBroadcast(id, topic: topic, event: userEvent, payload: .json(payload["payload"] ?? .object([:])), ref: ref)
        case (_, "presence"):
            presence(id, topic: topic, payload: payload, ref: ref)
        default:
            reply(id, topic: topic, ref: ref, joinRef: m["join_ref"], error: "unknown event \"\(event.prefix(40))\"")
        }
    }

    private func join(_ id: ConnectionID, topic: String, payload: [String: JSONValue], ref: JSONValue, joinRef: JSONValue) {
        guard topic.hasPrefix("realtime:") else { return reply(id, topic: topic, ref: ref, joinRef: joinRef, error: "topics start with realtime:") }
        if let token = payload["access_token"]?.stringValue, !token.isEmpty, !demoMode {
            switch auth.authenticate(token) {
            case let .success(p): connections[id]?.principal = p
            case let .failure(e): return reply(id, topic: topic, ref: ref, joinRef: joinRef, error: "Invalid JWT: \(e)")
            }
        }
        guard let principal = connections[id]?.principal else {
            return reply(id, topic: topic, ref: ref, joinRef: joinRef, error: "Unauthorized: no valid API key or token")
        }
        let config = payload["config"]?.objectValue ?? [:]
        var bindings: [Binding] = []
        if let list = config["postgres_changes"] {
            guard case let .array(items) = list else { return reply(id, topic: topic, ref: ref, joinRef: joinRef, error: "postgres_changes must be a list") }
            for item in items {
                switch binding(item) {
                case let .success(b): bindings.append(b)
                case let .failure(refusal): return reply(id, topic: topic, ref: ref, joinRef: joinRef, error: refusal.reason)
                }
            }
        }
        var channel = Channel(topic: topic, joinRef: joinRef, bindings: bindings,
                              broadcastSelf: config["broadcast"]?["self"] == .bool(true),
                              presenceKey: config["presence"]?["key"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? UUID().uuidString.lowercased(),
                              tracked: nil)
        if let s = channel.session, !principal.canSee(s) {
            return reply(id, topic: topic, ref: ref, joinRef: joinRef, error: "Unauthorized: this token does not open session \(s)")
        }
        channel.memberKey = channel.session != nil ? topic : Self.scope(of: principal) + topic
        if case let .bool(enabled)? = config["presence"]?["enabled"] { channel.presenceEnabled = enabled }
        if let old = connections[id]?.channels[topic] {
            if old.tracked != nil { presenceLeave(old, from: id) }
            removeMember(id, old)
        }
        if connections[id]?.channels[topic] == nil, (connections[id]?.channels.count ?? 0) >= Self.maxChannels {
            return reply(id, topic: topic, ref: ref, joinRef: joinRef, error: "at most \(Self.maxChannels) channels per socket")
        }
        connections[id]?.channels[topic] = channel
        members[channel.memberKey, default: []].insert(id)
        reply(id, topic: topic, ref: ref, joinRef: joinRef, ok: ["postgres_changes": .array(bindings.map(\.json))])
        if !bindings.isEmpty {
            send(id, topic: topic, event: "system", payload: ["channel": .string(String(topic.dropFirst("realtime:".count))),
                                                             "extension": .string("postgres_changes"), "message": .string("Subscribed to PostgreSQL"),
                                                             "status": .string("ok")], ref: .null)
        }
        if channel.session != nil, channel.presenceEnabled {
            send(id, topic: topic, event: "presence_state", payload: presenceState(topic), ref: .null)
        }
    }

    /// One `postgres_changes` binding: only `public.evolution_instances`, only `eq` filters on two columns.
    /// A refusal whose reason is shown to the client (an error reply or `phx_error`).
    struct Refusal: Error, Equatable { let reason: String }

    private func binding(_ item: JSONValue) -> Result<Binding, Refusal> {
        guard case let .object(o) = item else { return .failure(Refusal(reason: "each postgres_changes entry must be an object")) }
        let event = (o["event"]?.stringValue ?? "*").uppercased()
        guard ["*", "INSERT", "UPDATE", "DELETE"].contains(event) else { return .failure(Refusal(reason: "unknown event \"\(event.prefix(20))\"")) }
        let schema = o["schema"]?.stringValue ?? "public"
        guard schema == "public", let table = o["table"]?.stringValue, table == Self.table else {
            return .failure(Refusal(reason: "Unable to subscribe to changes with given parameters: only public.\(Self.table) exists here"))
        }
        let filter = o["filter"]?.stringValue
        var column: String?, value: String?
        if let filter, !filter.isEmpty {
            let parts = filter.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, ["instance_name", "instance_status"].contains(parts[0]), parts[1].hasPrefix("eq.") else {
                return .failure(Refusal(reason: "unsupported filter \"\(filter.prefix(60))\": only instance_name=eq.X and instance_status=eq.X"))
            }
            column = parts[0]
            value = String(parts[1].dropFirst(3))
        }
        return .success(Binding(id: Self.bindingID(event: event, schema: schema, table: table, filter: filter), event: event, schema: schema,
                                table: table, filter: filter, column: column, value: value))
    }

    private func leave(_ id: ConnectionID, topic: String, ref: JSONValue) {
        guard let ch = connections[id]?.channels.removeValue(forKey: topic) else {
            return reply(id, topic: topic, ref: ref, joinRef: nil, error: "unmatched topic")
        }
        removeMember(id, ch)
        if ch.tracked != nil { presenceLeave(ch, from: id) }
        reply(id, topic: topic, ref: ref, joinRef: ch.joinRef, ok: [:])
        send(id, topic: topic, event: "phx_close", payload: [:], ref: ref, joinRef: ch.joinRef)
    }

    private func accessToken(_ id: ConnectionID, topic: String, payload: [String: JSONValue], ref: JSONValue) {
        guard let token = payload["access_token"]?.stringValue, !token.isEmpty else {
            return reply(id, topic: topic, ref: ref, joinRef: nil, error: "access_token is required")
        }
        if demoMode { return }
        switch auth.authenticate(token) {
        case let .success(p):
            connections[id]?.principal = p
            // Channels the new credential no longer opens are closed.
            for (t, ch) in connections[id]?.channels ?? [:] where ch.session.map({ !p.canSee($0) }) ?? false {
                connections[id]?.channels[t] = nil
                removeMember(id, ch)
                send(id, topic: t, event: "phx_close", payload: [:], ref: .null, joinRef: ch.joinRef)
            }
        case let .failure(e):
            for (t, ch) in connections[id]?.channels ?? [:] {
                send(id, topic: t, event: "system", payload: ["channel": .string(String(t.dropFirst("realtime:".count))), "extension": .string("system"),
                                                             "message": .string("Invalid JWT: \(e)"), "status": .string("error")], ref: .null)
                send(id, topic: t, event: "phx_close", payload: [:], ref: .null, joinRef: ch.joinRef)
            }
            for ch in connections[id].map({ Array($0.channels.values) }) ?? [] { removeMember(id, ch) }
            connections[id]?.channels.removeAll()
            connections[id]?.principal = nil
        }
    }

    /// A client's broadcast to the others on its topic: 1.0.0 peers get the object form, 2.0.0 peers the
    /// binary user-broadcast frame realtime-js decodes (a binary payload reaches 2.0.0 peers only: 1.0.0's
    /// JSON cannot carry it). Each form is built once for all.
    private func clientBroadcast(_ id: ConnectionID, topic: String, event: String, payload: RealtimeWire.BroadcastPayload, ref: JSONValue) {
        guard let ch = connections[id]?.channels[topic] else { return reply(id, topic: topic, ref: ref, joinRef: nil, error: "unmatched topic") }
        var v1: [ConnectionID] = [], v2: [ConnectionID] = []
        for other in members[ch.memberKey] ?? [] where other != id || ch.broadcastSelf {
            if connections[other]?.v2 == true { v2.append(other) } else { v1.append(other) }
        }
        if !v2.isEmpty, let frame = RealtimeWire.userBroadcast(topic: topic, event: event, payload: payload) {
            server.send(WireFrame(frame, binary: true), to: v2)
        }
        if !v1.isEmpty, case let .json(body) = payload {
            let o: JSONValue = .object(["topic": .string(topic), "event": .string("broadcast"), "ref": .null,
                                        "payload": .object(["type": .string("broadcast"), "event": .string(event), "payload": body])])
            server.send(WireFrame(o.encoded()), to: v1)
        }
        if ref != .null { reply(id, topic: topic, ref: ref, joinRef: ch.joinRef, ok: [:]) }
    }

    private func removeMember(_ id: ConnectionID, _ ch: Channel) {
        members[ch.memberKey]?.remove(id)
        if members[ch.memberKey]?.isEmpty == true { members[ch.memberKey] = nil }
    }

    /// The broadcast scope of a credential on topics that are not a session's: every unscoped key shares
    /// one, a tenant's key its prefix's, and browsers (QRGate browser tokens, a Supabase user's or anon
    /// token) one of their own, so the anon key every frontend bundle carries never reads nor writes what
    /// services broadcast. Session topics are checked at join and shared by whoever may see the session.
    static func scope(of p: Principal) -> String {
        if p.role < .service { return "browser|" }
        return p.prefix.map { "tenant:\($0)|" } ?? ""
    }

    // MARK: Presence

    private func presence(_ id: ConnectionID, topic: String, payload: [String: JSONValue], ref: JSONValue) {
        guard var ch = connections[id]?.channels[topic], ch.session != nil else {
            return reply(id, topic: topic, ref: ref, joinRef: nil, error: "presence needs a joined realtime:session:ID channel")
        }
        switch payload["event"]?.stringValue {
        case "track":
            var meta = payload["payload"]?.objectValue ?? [:]
            guard JSONValue.object(meta).encoded().count <= 2048 else { return reply(id, topic: topic, ref: ref, joinRef: ch.joinRef, error: "presence payload over 2048 bytes") }
            if ch.tracked != nil { presenceLeave(ch, from: id) }
            meta["phx_ref"] = .string(String(nextBindingID))
            nextBindingID += 1
            ch.tracked = .object(meta)
            ch.presenceEnabled = true
            connections[id]?.channels[topic] = ch
            broadcastPresence(topic, diff: ["joins": .object([ch.presenceKey: .object(["metas": .array([.object(meta)])])]), "leaves": .object([:])])
        case "untrack":
            if ch.tracked != nil { presenceLeave(ch, from: id) }
            ch.tracked = nil
            connections[id]?.channels[topic] = ch
        default:
            return reply(id, topic: topic, ref: ref, joinRef: ch.joinRef, error: "presence event must be track or untrack")
        }
        reply(id, topic: topic, ref: ref, joinRef: ch.joinRef, ok: [:])
    }

    private func presenceLeave(_ ch: Channel, from id: ConnectionID) {
        guard let meta = ch.tracked else { return }
        broadcastPresence(ch.topic, diff: ["joins": .object([:]), "leaves": .object([ch.presenceKey: .object(["metas": .array([meta])])])], except: id)
    }

    private func presenceState(_ topic: String) -> [String: JSONValue] {
        var state: [String: [JSONValue]] = [:]
        for id in members[topic] ?? [] {
            if let ch = connections[id]?.channels[topic], let meta = ch.tracked { state[ch.presenceKey, default: []].append(meta) }
        }
        return state.mapValues { .object(["metas": .array($0)]) }
    }

    private func broadcastPresence(_ topic: String, diff: [String: JSONValue], except: ConnectionID? = nil) {
        for id in members[topic] ?? [] where id != except && connections[id]?.channels[topic]?.presenceEnabled == true {
            send(id, topic: topic, event: "presence_diff", payload: diff, ref: .null)
        }
    }

    // MARK: Session events → rows and broadcasts

    /// Every QRGate event of a session: broadcast on `realtime:session:ID`, and as a row change of
    /// `evolution_instances` when the row's columns changed.
    func sessionEvent(_ id: String, event: SessionEvent, eventBytes: @autoclosure () -> [UInt8], now: Date) {
        guard !connections.isEmpty, let s = registry[id] else {
            if case .countdown = event { return }
            if let s = registry[id] { lastRows[id] = Self.row(s) }
            return
        }
        let topic = "realtime:session:\(id)"
        if let members = members[topic], !members.isEmpty {
            // The event's bytes go in as the hub encoded them: no parse, no re-encode, one frame per serializer.
            let inner = Array(#"{"event":"#.utf8) + JSONValue.string(event.action).encoded()
                + Array(#","payload":"#.utf8) + eventBytes() + Array(#","type":"broadcast"}"#.utf8)
            var v1: [ConnectionID] = [], v2: [ConnectionID] = []
            for m in members { if connections[m]?.v2 == true { v2.append(m) } else { v1.append(m) } }
            if !v1.isEmpty { server.send(WireFrame(RealtimeWire.objectFrame(topic: topic, event: "broadcast", payload: inner)), to: v1) }
            if !v2.isEmpty { server.send(WireFrame(RealtimeWire.arrayFrame(topic: topic, event: "broadcast", payload: inner)), to: v2) }
        }
        // A countdown changes no column of the row: skip the row work on the busiest event.
        if case .countdown = event { return }
        // The QR is being replaced (expired with attempts left, or a refresh): the row keeps the old one
        // until the new one arrives, so a refresh is one UPDATE carrying the new QR, and `qr_code` is null
        // only when the QR is really gone (linked, failed, disconnected).
        switch event {
        case .qrExpired, .qrRegenerating: if s.machine.status == .pending { return }
        default: break
        }
        let row = Self.row(s)
        let old = lastRows[id]
        guard old != row else { return }
        lastRows[id] = row
        rowChange(session: id, type: old == nil ? "INSERT" : "UPDATE", record: row, old: old, now: now)
    }

    func sessionAdded(_ id: String, now: Date) {
        guard let s = registry[id] else { return }
        let row = Self.row(s)
        lastRows[id] = row
        rowChange(session: id, type: "INSERT", record: row, old: nil, now: now)
    }

    /// One row change: its data encoded once, one frame per (topic, matching binding ids) shared by
    /// every channel that has them (binding ids depend only on the binding, as Supabase's do).
    private func rowChange(session: String, type: String, record row: Row, old: Row?, now: Date) {
        var data: [UInt8]?
        // Made (its PNG drawn, if it was not) only when some connection may see the change.
        var made: [String: JSONValue]?
        func record() -> [String: JSONValue] {
            if made == nil { made = row.json }
            return made!
        }
        var frames: [String: (frame: WireFrame, to: [ConnectionID])] = [:]
        defer { for (frame, to) in frames.values { server.send(frame, to: to) } }
        for (cid, c) in connections {
            guard let p = c.principal, p.canSee(session) else { continue }
            for ch in c.channels.values {
                guard !ch.bindings.isEmpty else { continue }
                let ids = ch.bindings.filter { $0.matches(type: type, row: record()) }.map(\.id)
                guard !ids.isEmpty else { continue }
                let key = (c.v2 ? "2|" : "1|") + ch.topic + "|" + ids.map(String.init).joined(separator: ",")
                if frames[key] != nil { frames[key]!.to.append(cid); continue }
                if data == nil {
                    let o: [String: JSONValue] = ["schema": .string("public"), "table": .string(Self.table),
                                                  "commit_timestamp": .string(SessionEventEncoding.iso8601(now)), "type": .string(type),
                                                  "columns": Self.columns, "record": .object(record()), "old_record": .object(old?.json ?? [:]), "errors": .null]
                    data = Array(JSONValue.object(o).encoded())
                }
                let inner = Array(#"{"data":"#.utf8) + data! + Array(#","ids":"#.utf8) + JSONValue.array(ids.map { .int($0) }).encoded() + Array("}".utf8)
                let b = c.v2 ? RealtimeWire.arrayFrame(topic: ch.topic, event: "postgres_changes", payload: inner)
                             : RealtimeWire.objectFrame(topic: ch.topic, event: "postgres_changes", payload: inner)
                frames[key] = (WireFrame(b), [cid])
            }
        }
    }

    /// A binding's id, derived from what it asks for, so identical bindings share one id (and one frame).
    static func bindingID(event: String, schema: String, table: String, filter: String?) -> Int {
        let digest = SHA256.hash(data: Data("\(event)|\(schema)|\(table)|\(filter ?? "")".utf8))
        return Int(digest.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) } & 0x7fff_ffff)
    }

    static let columns: JSONValue = .array([
        ("instance_name", "text"), ("instance_status", "text"), ("qr_code", "text"), ("last_qr_update", "timestamptz"),
        ("qr_expires_at", "timestamptz"), ("attempt", "int4"), ("pairing_code", "text"),
    ].map { .object(["name": .string($0.0), "type": .string($0.1)]) })

    /// A row of the old table: its columns, the QR's PNG (`qr_code`) drawn only when the row is sent.
    struct Row: Equatable {
        var fields: [String: JSONValue]
        var qr: SessionQR?
        var json: [String: JSONValue] {
            var o = fields
            o["qr_code"] = qr.map { .string($0.pngDataURL) } ?? .null
            return o
        }
    }

    /// A session as a row of the old table; never a token or secret.
    static func row(_ s: SessionRegistry.Session) -> Row {
        let m = s.visibleMachine // what subscribers were shown: nothing before it is stored
        let status: String = switch m.status {
        case .pending: "connecting"
        case .connected: "open"
        default: "close"
        }
        return Row(fields: ["instance_name": .string(s.instanceName), "instance_status": .string(status),
                "last_qr_update": m.qrUpdatedAt.map { .string(SessionEventEncoding.iso8601($0)) } ?? .null,
                "qr_expires_at": m.qrExpiresAt.map { .string(SessionEventEncoding.iso8601($0)) } ?? .null,
                "attempt": .int(m.attempt),
                "pairing_code": m.qr?.pairingCode.map { .string($0) } ?? .null], qr: m.qr)
    }

    // MARK: Output

    private func reply(_ id: ConnectionID, topic: String, ref: JSONValue, joinRef: JSONValue?, ok response: [String: JSONValue]) {
        send(id, topic: topic, event: "phx_reply", payload: ["status": .string("ok"), "response": .object(response)], ref: ref, joinRef: joinRef)
    }

    private func reply(_ id: ConnectionID, topic: String, ref: JSONValue, joinRef: JSONValue?, error reason: String) {
        send(id, topic: topic, event: "phx_reply", payload: ["status": .string("error"), "response": .object(["reason": .string(reason)])],
             ref: ref, joinRef: joinRef)
    }

    private func send(_ id: ConnectionID, topic: String, event: String, payload: [String: JSONValue], ref: JSONValue, joinRef: JSONValue? = nil) {
        if connections[id]?.v2 == true {
            let a: JSONValue = .array([joinRef ?? .null, ref, .string(topic), .string(event), .object(payload)])
            return server.send(WireFrame(a.encoded()), to: id)
        }
        var o: [String: JSONValue] = ["topic": .string(topic), "event": .string(event), "payload": .object(payload), "ref": ref]
        if let joinRef { o["join_ref"] = joinRef }
        server.send(WireFrame(JSONValue.object(o).encoded()), to: id)
    }
}

extension RealtimeEndpoint: HubConsumer {
    public func watches(_ session: String) -> Bool { members["realtime:session:\(session)"]?.isEmpty == false }
    public var listsWatchedSessions: Bool { true }
    public func forEachWatchedSession(_ body: (String) -> Void) {
        let prefix = "realtime:session:"
        for (key, who) in members where !who.isEmpty && key.hasPrefix(prefix) { body(String(key.dropFirst(prefix.count))) }
    }

    /// Both pictures for a topic's members; the PNG when a connection with row bindings may see the session.
    public func picturesWanted(_ session: String) -> QRFormats {
        if watches(session) { return .standard }
        let rows = connections.values.contains { c in
            c.principal?.canSee(session) == true && c.channels.values.contains { !$0.bindings.isEmpty }
        }
        return rows ? .png : []
    }

    public func published(_ p: Publication) { sessionEvent(p.session, event: p.event, eventBytes: p.bytes, now: clock.now()) }
    public func sessionAdded(_ session: String) { sessionAdded(session, now: clock.now()) }
}
