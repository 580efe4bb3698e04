import Foundation
import QRGateCore

extension Gateway {
    /// Runs on the loop that owns the handshake: config, the key table and the per-address counts only.
    /// Two loops may each let one more handshake from an address through before either is counted.
    nonisolated func shouldAccept(_ info: WebSocketInfo) -> (status: Int, reason: String)? {
        if info.path == "/ws/echo" { return config.server.conformanceEcho ? nil : (404, "no WebSocket here") }
        guard info.path == "/ws" || info.path == RealtimeEndpoint.path else { return (404, "no WebSocket here") }
        if socketsPerIP.withLock({ $0[info.peer, default: 0] }) >= config.server.maxConnectionsPerIP {
            logger.notice("refused a WebSocket from \(info.peer): over server.maxConnectionsPerIP (\(config.server.maxConnectionsPerIP))")
            return (429, "too many connections from this address")
        }
        let allowed = config.server.allowedOrigins
        // Browsers always send Origin; a non-browser client without one is not a cross-site page.
        if !allowed.isEmpty, let origin = info.origin, !allowed.contains(origin) { return (403, "origin not allowed") }
        if info.path == RealtimeEndpoint.path { return RealtimeEndpoint.shouldAccept(info, auth: auth, demoMode: demoMode) }
        return nil
    }

    func opened(_ connection: ConnectionID, info: WebSocketInfo) {
        if info.path == "/ws/echo" { echoSockets.insert(connection); return }
        socketsPerIP.withLock { $0[info.peer, default: 0] += 1 }
        if info.path == RealtimeEndpoint.path {
            sockets[connection] = Peer(info: info, tokens: Double(config.server.messagesPerSecond * 2), lastRefill: clock.now())
            realtime.opened(connection, info: info)
            return
        }
        var peer = Peer(info: info, tokens: Double(config.server.messagesPerSecond * 2), lastRefill: clock.now())
        if demoMode { peer.grant(Principal(role: .admin)) }
        if let presented = info.query["token"] ?? info.authorization.flatMap(Self.bearer),
           case let .success(p) = auth.authenticate(presented) {
            peer.grant(p)
        }
        sockets[connection] = peer
        send(ServerMessage.hello(connectionID: connection, now: clock.now(), maxMessageBytes: config.server.maxMessageBytes, role: peer.role.rawValue,
                                  bootId: bootId, loop: server.loopIndex(of: connection)), to: connection)
    }

    func received(_ connection: ConnectionID, message: [UInt8], binary: Bool) {
        if echoSockets.contains(connection) {
            server.send(WireFrame(message, binary: binary), to: connection)
            return
        }
        guard admit(connection) else { return }
        if sockets[connection]?.info.path == RealtimeEndpoint.path {
            return realtime.received(connection, message: message, binary: binary)
        }
        if binary {
            return reject(ProtocolError(.binaryUnsupported, "binary frames are not supported; send JSON text"), to: connection)
        }
        let parsed: ClientMessage
        do { parsed = try ClientMessage.parse(message) } catch { return reject(error, to: connection) }
        switch parsed {
        case .ping:
            send(ServerMessage.pong(now: clock.now()), to: connection)
        case let .subscribe(selector, token, since, formats):
            subscribe(connection, selector, token: token, since: since, formats: formats ?? .standard)
        case let .unsubscribe(selector):
            unsubscribe(connection, selector)
        case let .refresh(session):
            refresh(connection, session: session)
        case let .pair(session, phoneNumber):
            pair(connection, session: session, phoneNumber: phoneNumber)
        }
    }

    func closed(_ connection: ConnectionID) {
        if let peer = sockets.removeValue(forKey: connection) {
            socketsPerIP.withLock { counts in
                counts[peer.info.peer, default: 1] -= 1
                if counts[peer.info.peer] == 0 { counts[peer.info.peer] = nil }
            }
        }
        echoSockets.remove(connection)
        hub.remove(connection)
        realtime.closed(connection)
    }

    /// Token bucket per connection: `server.messagesPerSecond`, bursts of twice that; a peer over it is closed (4029).
    private func admit(_ connection: ConnectionID) -> Bool {
        guard var peer = sockets[connection] else { return false }
        let rate = Double(config.server.messagesPerSecond)
        let now = clock.now()
        peer.tokens = min(rate * 2, peer.tokens + rate * max(0, now.timeIntervalSince(peer.lastRefill)))
        peer.lastRefill = now
        guard peer.tokens >= 1 else {
            sockets[connection] = peer
            server.close(connection, code: CloseCode.rateLimited, reason: "over \(config.server.messagesPerSecond) messages per second")
            return false
        }
        peer.tokens -= 1
        sockets[connection] = peer
        return true
    }

    private func refresh(_ connection: ConnectionID, session: String) {
        guard let peer = sockets[connection] else { return }
        guard peer.can(.admin, session) else {
            let why = peer.role == .admin ? "this admin key covers other sessions (its prefix), not \(session)" : "refresh needs an admin key"
            return reject(ProtocolError(.forbidden, why), to: connection, session: session)
        }
        runtime.order(session, .refresh, isolation: self) { outcome in self.refreshed(outcome, connection, session: session) }
    }

    private func refreshed(_ outcome: OrderOutcome, _ connection: ConnectionID, session: String) {
        let now = clock.now()
        switch outcome {
        case .notFound:
            reject(ProtocolError(.unknownSession, "no session \(session)"), to: connection, session: session)
        case let .unavailable(why):
            reject(ProtocolError(.unavailable, why), to: connection, session: session)
        case .done, .refresh(.accepted):
            send(ServerMessage.encode(["action": .string("refreshing"), "sessionId": .string(session),
                                       "timestamp": .int(ServerMessage.milliseconds(now))]), to: connection)
        case .refresh(.alreadyConnected):
            send(ServerMessage.encode(["action": .string("connected"), "sessionId": .string(session),
                                       "message": .string(SessionMachine.alreadyConnectedMessage),
                                       "timestamp": .int(ServerMessage.milliseconds(now))]), to: connection)
        case let .refresh(.rateLimited(wait)):
            reject(ProtocolError(.rateLimited, "refreshed too recently; try again in \(wait) s"), to: connection, session: session,
                   extra: ["retryAfter": .int(wait)])
        case .refresh(.noAttemptsLeft):
            reject(ProtocolError(.forbidden, "no attempts left"), to: connection, session: session)
        }
    }

    /// Link by phone number: anyone who may watch the session may ask (the person at the page is the
    /// one linking). A browser's request spends one of the session's attempts and only while it shows
    /// codes (pending): a leaked token cannot keep a session alive, revive a failed one, or send pairing
    /// prompts to phone after phone; asking again for the number that already has a valid code starts no
    /// new round. Services and admins reset the attempts, as a refresh does.
    private func pair(_ connection: ConnectionID, session: String, phoneNumber: String) {
        guard let peer = sockets[connection] else { return }
        guard runtime.registry[session] != nil else {
            return reject(ProtocolError(.unknownSession, "no session \(session)"), to: connection, session: session)
        }
        guard peer.canSee(session) else {
            return reject(ProtocolError(peer.role >= .service ? .forbidden : .unauthorized, "no credential for session \(session)"), to: connection, session: session)
        }
        let now = clock.now()
        let requested = ServerMessage.encode(["action": .string("pairing_requested"), "sessionId": .string(session),
                                              "pairingPhone": .string(PhoneNumber.masked(phoneNumber)),
                                              "timestamp": .int(ServerMessage.milliseconds(now))])
        let browser = peer.role < .service
        if browser, let s = runtime.registry[session], s.phoneNumber == phoneNumber, s.machine.status == .pending, s.machine.qr?.pairingCode != nil {
            return send(requested, to: connection) // that code is still good: the snapshot and events carry it
        }
        runtime.order(session, .pair(phone: phoneNumber, asAttempt: browser), isolation: self) { outcome in
            self.paired(outcome, connection, session: session, requested: requested)
        }
    }

    private func paired(_ outcome: OrderOutcome, _ connection: ConnectionID, session: String, requested: [UInt8]) {
        let now = clock.now()
        switch outcome {
        case .notFound:
            reject(ProtocolError(.unknownSession, "no session \(session)"), to: connection, session: session)
        case let .unavailable(why):
            reject(ProtocolError(.unavailable, why), to: connection, session: session)
        case .done, .refresh(.accepted):
            send(requested, to: connection)
        case .refresh(.alreadyConnected):
            send(ServerMessage.encode(["action": .string("connected"), "sessionId": .string(session),
                                       "message": .string(SessionMachine.alreadyConnectedMessage),
                                       "timestamp": .int(ServerMessage.milliseconds(now))]), to: connection)
        case let .refresh(.rateLimited(wait)):
            reject(ProtocolError(.rateLimited, "asked too recently; try again in \(wait) s"), to: connection, session: session,
                   extra: ["retryAfter": .int(wait)])
        case .refresh(.noAttemptsLeft):
            reject(ProtocolError(.forbidden, "no attempts left for a new code on this session; its service can start it again"),
                   to: connection, session: session)
        }
    }

    static func bearer(_ header: String) -> String? {
        for prefix in ["Bearer ", "Api-Key "] where header.hasPrefix(prefix) { return String(header.dropFirst(prefix.count)) }
        return nil
    }

    func reject(_ error: ProtocolError, to connection: ConnectionID, session: String? = nil, extra: [String: JSONValue] = [:]) {
        send(ServerMessage.error(error, now: clock.now(), session: session, extra: extra), to: connection)
    }

    func send(_ bytes: [UInt8], to connection: ConnectionID) {
        server.send(WireFrame(bytes), to: connection)
    }
}
