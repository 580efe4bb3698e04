import Foundation
import QRGateCore

/// The snapshots (or missed events) a firehose subscription still owes its subscriber, sent as
/// `snapshots` batches paced by what the subscriber reads (docs/PROTOCOL.md, "Many sessions").
struct SnapshotStream {
    let id: Int
    let selector: SessionSelector
    let ids: [String]
    var next = 0
    let since: [String: Int]
    /// For sessions named in `since`: their seq when the subscription began. One that moved on has had
    /// live events sent already, so replaying what came before them would arrive out of order: it gets
    /// a snapshot instead.
    let seqAtStart: [String: Int]
    let formats: QRFormats
    var inFlight = 0
    var done: Bool { next >= ids.count }
}

extension Gateway {
    /// A batch holds at most this many sessions…
    static let batchItems = 256
    /// …and about this many bytes (one more item may cross it).
    static let batchBytes = 64 * 1024
    /// Batches written ahead of the subscriber's reading: two keep the socket busy without a burst.
    static let batchesAhead = 2
    /// Snapshot streams one connection may have running at once.
    static let maxStreams = 8
    /// Prefixes one connection may subscribe to by name (each is checked against every event).
    static let maxPrefixes = 64

    func subscribe(_ connection: ConnectionID, _ selector: SessionSelector, token: String?, since: Since?, formats: QRFormats,
                   readStore: Bool = true) {
        guard var peer = sockets[connection] else { return }
        let label = Self.errorSession(selector)
        if let token {
            switch auth.authenticate(token) {
            case let .failure(e):
                return reject(ProtocolError(.unauthorized, e.description), to: connection, session: label)
            case let .success(p):
                peer.grant(p)
                sockets[connection] = peer
            }
        }
        let registry = runtime.registry
        if selector.isStream, peer.streams.values.filter({ $0.selector != selector }).count >= Self.maxStreams {
            return reject(ProtocolError(.tooManySubscriptions, "at most \(Self.maxStreams) snapshot streams at once; wait for a \"done\" batch"),
                          to: connection, session: label)
        }
        var ids: [String]
        var echo: [String: JSONValue] = [:]
        switch selector {
        case let .one(session):
            guard peer.canSee(session) else {
                let why = peer.role >= .service ? "this key covers other sessions (its prefix), not \(session)"
                                                : "this session needs a browser token for it, or a service key"
                return reject(ProtocolError(peer.role >= .service ? .forbidden : .unauthorized, why), to: connection, session: session)
            }
            let sinceSeq: Int? = if case let .seq(n)? = since { n } else { nil }
            // In a cluster this node may be a few milliseconds behind the node that runs the session (one made there
            // a moment ago, a client back from there with a newer `since`): it reads the store first.
            let behind = registry[session].map { s in sinceSeq.map { $0 > s.seq } ?? false } ?? true
            if readStore, runtime.cluster != nil, behind {
                return runtime.readFirst(session, upTo: sinceSeq, isolation: self) {
                    self.subscribe(connection, selector, token: nil, since: since, formats: formats, readStore: false)
                }
            }
            guard registry[session] != nil else {
                return reject(ProtocolError(.unknownSession, "no session \(session)"), to: connection, session: session)
            }
            guard room(for: [session], connection) else { return }
            hub.subscribe(connection, to: session, formats: formats)
            sendSubscribed(connection, ["sessionId": .string(session)], peer: peer, formats: formats)
            for frame in registry.welcome(session: session, since: sinceSeq, now: clock.now(), formats: formats) {
                send(frame, to: connection)
            }
            return
        case .all:
            guard peer.role >= .service else {
                return reject(ProtocolError(.forbidden, "subscribing to every session needs a service or admin key"), to: connection, session: "*")
            }
            for p in peer.starPrefixes { hub.unsubscribe(connection, prefix: p) }
            if let scope = peer.everySessionScope {
                for p in scope { hub.subscribe(connection, prefix: p, formats: formats) }
                peer.starPrefixes = scope
                ids = registry.sessions.keys.filter { id in scope.contains { id.hasPrefix($0) } }
                echo = ["sessionId": .string("*"), "scope": .array(scope.map { .string($0) })]
            } else {
                hub.subscribe(connection, to: Hub.everySession, formats: formats)
                peer.starPrefixes = []
                ids = Array(registry.sessions.keys)
                echo = ["sessionId": .string("*")]
            }
        case let .prefix(prefix):
            guard peer.covers(prefix: prefix) else {
                let why = peer.role >= .service ? "this key covers other sessions (its prefix), not every \(prefix)…"
                                                : "subscribing to a prefix needs a service or admin key"
                return reject(ProtocolError(.forbidden, why), to: connection)
            }
            if peer.explicitPrefixes.contains(prefix) {
                hub.unsubscribe(connection, prefix: prefix) // subscribed again: the new formats replace the old
            } else if peer.explicitPrefixes.count >= Self.maxPrefixes {
                return reject(ProtocolError(.tooManySubscriptions, "at most \(Self.maxPrefixes) prefixes per connection"), to: connection)
            }
            hub.subscribe(connection, prefix: prefix, formats: formats)
            peer.explicitPrefixes.insert(prefix)
            ids = registry.sessions.keys.filter { $0.hasPrefix(prefix) }
            echo = ["prefix": .string(prefix)]
        case let .list(list):
            let refused = list.filter { !peer.canSee($0) }
            guard refused.isEmpty else {
                let code: ErrorCode = peer.role >= .service ? .forbidden : .unauthorized
                return reject(ProtocolError(code, "these credentials do not open \(Self.names(refused))"), to: connection,
                              extra: ["sessions": .array(refused.prefix(100).map { .string($0) })])
            }
            let unknown = list.filter { registry[$0] == nil }
            guard unknown.isEmpty else {
                return reject(ProtocolError(.unknownSession, "no session \(Self.names(unknown))"), to: connection,
                              extra: ["sessions": .array(unknown.prefix(100).map { .string($0) })])
            }
            guard room(for: list, connection) else { return }
            for id in list { hub.subscribe(connection, to: id, formats: formats) }
            ids = list
            echo = ["sessions": .array(list.map { .string($0) })]
        }
        ids.sort()
        nextStream += 1
        let sinceMap: [String: Int] = if case let .map(m)? = since { m } else { [:] }
        // A new subscription with the same selector replaces the stream still running for it.
        for (sid, st) in peer.streams where st.selector == selector { peer.streams[sid] = nil }
        var seqAtStart: [String: Int] = [:]
        for id in sinceMap.keys { if let s = registry[id] { seqAtStart[id] = s.visibleSeq } }
        peer.streams[nextStream] = SnapshotStream(id: nextStream, selector: selector, ids: ids, since: sinceMap, seqAtStart: seqAtStart,
                                                  formats: formats)
        sockets[connection] = peer
        echo["stream"] = .int(nextStream)
        echo["count"] = .int(ids.count)
        sendSubscribed(connection, echo, peer: peer, formats: formats)
        pump(connection)
    }

    func unsubscribe(_ connection: ConnectionID, _ selector: SessionSelector) {
        guard var peer = sockets[connection] else { return }
        var echo: [String: JSONValue]
        switch selector {
        case let .one(session):
            guard hub.unsubscribe(connection, from: session) else {
                return reject(ProtocolError(.notSubscribed, "not subscribed to \(session)"), to: connection)
            }
            echo = ["sessionId": .string(session)]
        case .all:
            let had = hub.unsubscribe(connection, from: Hub.everySession) || !peer.starPrefixes.isEmpty
            for p in peer.starPrefixes { hub.unsubscribe(connection, prefix: p) }
            peer.starPrefixes = []
            guard had else { return reject(ProtocolError(.notSubscribed, "not subscribed to *"), to: connection) }
            echo = ["sessionId": .string("*")]
        case let .prefix(prefix):
            guard peer.explicitPrefixes.remove(prefix) != nil else {
                return reject(ProtocolError(.notSubscribed, "not subscribed to prefix \(prefix)"), to: connection)
            }
            hub.unsubscribe(connection, prefix: prefix)
            echo = ["prefix": .string(prefix)]
        case let .list(list):
            let dropped = list.filter { hub.unsubscribe(connection, from: $0) }
            guard !dropped.isEmpty else { return reject(ProtocolError(.notSubscribed, "not subscribed to any of these sessions"), to: connection) }
            echo = ["sessions": .array(dropped.map { .string($0) })]
        }
        for (sid, st) in peer.streams where st.selector == selector { peer.streams[sid] = nil }
        sockets[connection] = peer
        echo["action"] = .string("unsubscribed")
        echo["timestamp"] = .int(ServerMessage.milliseconds(clock.now()))
        send(ServerMessage.encode(echo), to: connection)
    }

    /// A batch left for the subscriber: the stream it belongs to may send more.
    func batchWritten(_ connection: ConnectionID) {
        guard var peer = sockets[connection], !peer.batchesInFlight.isEmpty else { return }
        let sid = peer.batchesInFlight.removeFirst()
        if peer.streams[sid] != nil { peer.streams[sid]!.inFlight -= 1 }
        sockets[connection] = peer
        pump(connection)
    }

    /// Sends batches of every unfinished stream of the peer while fewer than `batchesAhead` are unwritten.
    func pump(_ connection: ConnectionID) {
        guard var peer = sockets[connection] else { return }
        for sid in peer.streams.keys.sorted() {
            guard var st = peer.streams[sid] else { continue }
            while st.inFlight < Self.batchesAhead {
                let batch = nextBatch(&st, connection)
                st.inFlight += 1
                peer.batchesInFlight.append(sid)
                server.send(WireFrame(batch), to: connection, notifyWhenWritten: true)
                if st.done { break }
            }
            peer.streams[sid] = st.done ? nil : st
        }
        sockets[connection] = peer
    }

    /// The next `snapshots` batch of a stream: snapshot items, spliced as bytes into one frame. A session
    /// the subscriber had (`since`) gets its missed events as ordinary frames instead, when the log still
    /// holds them all.
    private func nextBatch(_ st: inout SnapshotStream, _ connection: ConnectionID) -> [UInt8] {
        let now = clock.now()
        let registry = runtime.registry
        var items: [UInt8] = []
        items.reserveCapacity(Self.batchBytes + 16 * 1024)
        var n = 0, replayed = 0
        while !st.done, n < Self.batchItems, items.count + replayed < Self.batchBytes {
            let id = st.ids[st.next]
            st.next += 1
            // Unsubscribed meanwhile (one of a list, or the whole subscription): nothing more for it.
            guard hub.reaches(connection, session: id) else { continue }
            // Nothing missed before the subscription, and live events since: the client is current.
            if let since = st.since[id], since == st.seqAtStart[id] { continue }
            if let since = st.since[id], registry[id]?.visibleSeq == st.seqAtStart[id] {
                if let frames = registry.replay(session: id, since: since, formats: st.formats) {
                    for f in frames { send(f, to: connection); replayed += f.count }
                    continue
                }
            }
            guard let item = registry.snapshot(session: id, now: now, formats: st.formats,
                                               recovered: st.since[id] == nil ? nil : false) else { continue }
            if n > 0 { items.append(UInt8(ascii: ",")) }
            items.append(contentsOf: item)
            n += 1
        }
        var head = Array(#"{"action":"snapshots","stream":\#(st.id),"done":\#(st.done),"sent":\#(st.next),"count":\#(st.ids.count),"timestamp":\#(ServerMessage.milliseconds(now)),"items":["#.utf8)
        head.append(contentsOf: items)
        head.append(contentsOf: Array("]}".utf8))
        return head
    }

    private func sendSubscribed(_ connection: ConnectionID, _ fields: [String: JSONValue], peer: Peer, formats: QRFormats) {
        var o = fields
        o["action"] = .string("subscribed")
        o["role"] = .string(peer.role.rawValue)
        o["formats"] = .array(formats.wireNames.map { .string($0) })
        o["timestamp"] = .int(ServerMessage.milliseconds(clock.now()))
        send(ServerMessage.encode(o), to: connection)
    }

    /// Whether the connection may hold these more one-by-one subscriptions; refuses them if not.
    private func room(for sessions: [String], _ connection: ConnectionID) -> Bool {
        let held = hub.subscriptions(of: connection)
        let added = sessions.filter { !held.contains($0) }.count
        let limit = config.server.maxSubscriptionsPerConnection
        guard held.count + added <= limit else {
            reject(ProtocolError(.tooManySubscriptions, "at most \(limit) subscriptions per connection (server.maxSubscriptionsPerConnection); "
                                 + "subscribe to \"*\" or a prefix for more"), to: connection, session: sessions.count == 1 ? sessions[0] : nil)
            return false
        }
        return true
    }

    static func errorSession(_ selector: SessionSelector) -> String? {
        switch selector {
        case let .one(s): s
        case .all: "*"
        default: nil
        }
    }

    /// "a, b, c and 12 more".
    static func names(_ ids: [String]) -> String {
        ids.count <= 5 ? ids.joined(separator: ", ") : ids.prefix(5).joined(separator: ", ") + " and \(ids.count - 5) more"
    }
}
