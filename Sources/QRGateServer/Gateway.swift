import Foundation
import Logging
import QRGateCore
import QRGateQR
import QRGateHTTP
import QRGateUpstream

/// The gateway's behaviour behind the libwebsockets loop: HTTP routes, WebSocket protocol.
/// Lives on the service thread.
public final class Gateway: LWSServerDelegate, @unchecked Sendable {
    public let config: Config
    let server: LWSServer
    let staticFiles: StaticFiles
    let renderer: QRRenderer
    let logger: Logger
    let startedAt = Date()
    public let timers: LoopTimers
    /// The in-process simulator (upstream.mode = simulator), served on this port.
    public let simulatorHost: SimulatorHost?
    /// Where parsed webhook events go (the session layer; tests observe it).
    public var onUpstreamEvent: ((UpstreamEvent) -> Void)?
    /// Knows the instance tokens the gateway holds, to authenticate webhooks by the envelope's apikey.
    public var instanceToken: ((String) -> String?)?
    public let hub = Hub()
    public let runtime: SessionRuntime
    /// No keys configured and a loopback bind: everyone is admin.
    public let demoMode: Bool
    private var sockets: [ConnectionID: Peer] = [:]
    private var echoSockets: Set<ConnectionID> = []

    struct Peer {
        var info: WebSocketInfo
        var role: Role
    }

    public init(config: Config, server: LWSServer, staticFiles: StaticFiles, http: CurlMulti, demoMode: Bool, logger: Logger) {
        self.demoMode = demoMode
        self.config = config
        self.server = server
        self.staticFiles = staticFiles
        self.logger = logger
        renderer = QRRenderer(style: QRStyle(correction: QRErrorCorrection(rawValue: config.qr.errorCorrection) ?? .medium,
                                             quietZone: config.qr.quietZone, moduleSize: config.qr.moduleSize))
        let timers = LoopTimers(arm: { [weak server] us in server?.wake(afterMicroseconds: us) })
        self.timers = timers
        if config.upstream.mode == "simulator" {
            simulatorHost = SimulatorHost(simulator: EvolutionSimulator(config: config.simulator, renderer: renderer),
                                          server: server, timers: timers, http: http, logger: logger)
        } else {
            simulatorHost = nil
        }
        let rules = SessionRules(ttlSeconds: Double(config.qr.ttlSeconds), maxAttempts: config.qr.maxAttempts,
                                 countdownIntervalSeconds: Double(config.qr.countdownIntervalSeconds),
                                 pollIntervalSeconds: config.poll.intervalSeconds, refreshMinIntervalSeconds: config.refresh.minIntervalSeconds,
                                 backoffMaxSeconds: config.poll.backoffMaxSeconds)
        runtime = SessionRuntime(registry: SessionRegistry(rules: rules, hub: hub, logCapacity: config.events.logCapacity),
                                 server: server, timers: timers, frames: QRFrameFactory(renderer: renderer),
                                 cycleSeconds: config.refresh.cycleSeconds, logger: logger)
        hub.transport = self
        server.delegate = self
        onUpstreamEvent = { [weak self] in self?.runtime.deliver($0) }
        instanceToken = { [weak self] in self?.runtime.instanceToken(of: $0) }
    }

    /// Runs on the loop once listening: the upstream client, the configured sessions, the cycle.
    func begin(upstream: EvolutionClient) {
        runtime.upstream = upstream
        for seed in config.sessions {
            runtime.add(id: seed.sessionId, instanceName: seed.instanceName ?? seed.sessionId, instanceToken: seed.instanceToken, numberId: seed.numberId)
        }
        if config.upstream.mode == "simulator", !config.demoSession.isEmpty, runtime.registry[config.demoSession] == nil {
            runtime.add(id: config.demoSession, instanceName: config.demoSession, instanceToken: nil, numberId: nil)
        }
        runtime.startCycle()
    }

    // MARK: HTTP

    public func http(_ request: HTTPRequest, connection: ConnectionID) -> HTTPResponse? {
        switch (request.method, request.path) {
        case (.get, "/healthz"), (.head, "/healthz"):
            return .json(200, ["status": "ok", "version": QRGateVersion.string,
                               "uptimeSeconds": Int(Date().timeIntervalSince(startedAt)),
                               "websockets": sockets.count, "sessions": runtime.registry.sessions.count])
        case (.get, "/api/v1/qr"):
            return qrImage(request)
        case (.post, "/webhooks/evolution"):
            return webhook(request)
        case (.post, "/functions/v1/refresh-qr-codes"):
            return refreshCycle(request, connection: connection)
        case (.post, "/api/v1/sessions"):
            return createSession(request)
        default:
            break
        }
        if let simulatorHost, EvolutionSimulator.handles(request.path) {
            return simulatorHost.http(request, connection: connection)
        }
        if request.path.hasPrefix("/api/") {
            return .error(404, "no such endpoint: \(request.method.rawValue) \(request.path.prefix(200))")
        }
        guard request.method == .get || request.method == .head else {
            return .error(405, "method \(request.method.rawValue) not allowed on \(request.path.prefix(200))")
        }
        guard let file = staticFiles.resolve(request.path) else {
            return .error(404, "not found: \(request.path.prefix(200))")
        }
        return HTTPResponse(status: 200, contentType: "", headers: [("cache-control", "no-cache")], body: .file(path: file))
    }

    private func qrImage(_ request: HTTPRequest) -> HTTPResponse {
        guard let text = request.query["text"], !text.isEmpty else {
            return .error(400, "query parameter \"text\" is required")
        }
        guard text.utf8.count <= config.qr.maxTextBytes else {
            return .error(400, "text is \(text.utf8.count) bytes; the limit is \(config.qr.maxTextBytes) (qr.maxTextBytes)")
        }
        let format = request.query["format"] ?? "svg"
        do {
            switch format {
            case "svg":
                return .text(200, try renderer.svg(text), contentType: "image/svg+xml")
            case "png":
                return HTTPResponse(status: 200, contentType: "image/png", body: .bytes(try renderer.png(text)))
            default:
                return .error(400, "format must be svg or png, got \"\(format.prefix(20))\"")
            }
        } catch {
            return .error(400, "cannot encode text as a QR code: \(error)")
        }
    }

    // MARK: Webhooks

    /// POST /webhooks/evolution: Evolution's envelope, authenticated by the shared secret
    /// (`x-webhook-secret` header or `?secret=`) or by the envelope's apikey.
    private func webhook(_ request: HTTPRequest) -> HTTPResponse {
        let parsed: EvolutionParsing.Webhook
        switch EvolutionParsing.webhook(request.body) {
        case let .failure(e): return .error(400, e.description)
        case let .success(w): parsed = w
        }
        guard webhookAuthorized(request, parsed) else {
            return .error(401, "webhook not authenticated: send the shared secret (x-webhook-secret) or a valid apikey")
        }
        guard let event = parsed.event else {
            return .json(200, ["success": true, "ignored": true, "event": parsed.eventName])
        }
        logger.debug("webhook \(parsed.eventName) for \(parsed.instance)")
        onUpstreamEvent?(event)
        return .json(200, ["success": true, "event": parsed.eventName])
    }

    private func webhookAuthorized(_ request: HTTPRequest, _ w: EvolutionParsing.Webhook) -> Bool {
        let secret = config.upstream.webhookSecret
        if !secret.isEmpty, let given = request.headers["x-webhook-secret"] ?? request.query["secret"], constantTimeEquals(given, secret) {
            return true
        }
        guard let key = w.apikey, !key.isEmpty else { return false }
        if !config.upstream.apiKey.isEmpty && constantTimeEquals(key, config.upstream.apiKey) { return true }
        if let token = instanceToken?(w.instance), constantTimeEquals(key, token) { return true }
        if let sim = simulatorHost?.simulator, let token = sim.token(of: w.instance), constantTimeEquals(key, token) { return true }
        return false
    }

    // MARK: WebSocket

    public func webSocketShouldAccept(path: String, origin: String?) -> Bool {
        if path == "/ws/echo" { return config.server.conformanceEcho }
        guard path == "/ws" else { return false }
        let allowed = config.server.allowedOrigins
        guard !allowed.isEmpty, let origin else { return true }
        return allowed.contains(origin)
    }

    public func webSocketOpened(_ connection: ConnectionID, info: WebSocketInfo) {
        if info.path == "/ws/echo" { echoSockets.insert(connection); return }
        let presented = info.query["token"] ?? info.authorization.flatMap(Self.bearer)
        let role = role(for: presented) ?? (demoMode ? .admin : .browser)
        sockets[connection] = Peer(info: info, role: role)
        send(ServerMessage.hello(connectionID: connection, now: Date(), maxMessageBytes: config.server.maxMessageBytes, role: role.rawValue), to: connection)
    }

    public func webSocketReceived(_ connection: ConnectionID, message: [UInt8], binary: Bool) {
        if echoSockets.contains(connection) {
            server.send(WireFrame(message, binary: binary), to: connection)
            return
        }
        if binary {
            return reject(ProtocolError(.binaryUnsupported, "binary frames are not supported; send JSON text"), to: connection)
        }
        let parsed: ClientMessage
        do { parsed = try ClientMessage.parse(message) } catch { return reject(error, to: connection) }
        switch parsed {
        case .ping:
            send(ServerMessage.pong(now: Date()), to: connection)
        case let .subscribe(session, token, since):
            subscribe(connection, session: session, token: token, since: since)
        case let .unsubscribe(session):
            guard hub.unsubscribe(connection, from: session) else {
                return reject(ProtocolError(.notSubscribed, "not subscribed to \(session)"), to: connection)
            }
            send(ServerMessage.encode(["action": .string("unsubscribed"), "sessionId": .string(session), "timestamp": .int(ServerMessage.milliseconds(Date()))]), to: connection)
        case let .refresh(session):
            refresh(connection, session: session)
        }
    }

    public func webSocketClosed(_ connection: ConnectionID) {
        sockets[connection] = nil
        echoSockets.remove(connection)
        hub.remove(connection)
    }

    public func timerFired() { timers.fire() }

    /// Subscriptions one connection may hold.
    static let maxSubscriptionsPerConnection = 64

    private func subscribe(_ connection: ConnectionID, session: String, token: String?, since: Int?) {
        guard var peer = sockets[connection] else { return }
        if let token {
            guard let r = role(for: token) else {
                return reject(ProtocolError(.unauthorized, "token not recognised"), to: connection, session: session)
            }
            peer.role = max(peer.role, r)
            sockets[connection] = peer
        }
        if session == Hub.everySession {
            guard peer.role >= .service else {
                return reject(ProtocolError(.forbidden, "subscribing to every session needs a service or admin key"), to: connection, session: session)
            }
        } else if runtime.registry[session] == nil {
            return reject(ProtocolError(.unknownSession, "no session \(session)"), to: connection, session: session)
        }
        if !hub.isSubscribed(connection, to: session), hub.subscriptions(of: connection).count >= Self.maxSubscriptionsPerConnection {
            return reject(ProtocolError(.tooManySubscriptions, "at most \(Self.maxSubscriptionsPerConnection) subscriptions per connection"), to: connection, session: session)
        }
        hub.subscribe(connection, to: session)
        let now = Date()
        send(ServerMessage.encode(["action": .string("subscribed"), "sessionId": .string(session), "role": .string(peer.role.rawValue),
                                   "timestamp": .int(ServerMessage.milliseconds(now))]), to: connection)
        let ids = session == Hub.everySession ? runtime.registry.sessions.keys.sorted() : [session]
        for id in ids {
            for frame in runtime.registry.welcome(session: id, since: session == Hub.everySession ? nil : since, now: now) {
                send(frame, to: connection)
            }
        }
    }

    private func refresh(_ connection: ConnectionID, session: String) {
        guard let peer = sockets[connection] else { return }
        guard peer.role == .admin else {
            return reject(ProtocolError(.forbidden, "refresh needs an admin key"), to: connection, session: session)
        }
        let now = Date()
        switch runtime.refresh(session) {
        case nil:
            reject(ProtocolError(.unknownSession, "no session \(session)"), to: connection, session: session)
        case .accepted?:
            send(ServerMessage.encode(["action": .string("refreshing"), "sessionId": .string(session),
                                       "timestamp": .int(ServerMessage.milliseconds(now))]), to: connection)
        case .alreadyConnected?:
            send(ServerMessage.encode(["action": .string("connected"), "sessionId": .string(session),
                                       "message": .string(SessionMachine.alreadyConnectedMessage),
                                       "timestamp": .int(ServerMessage.milliseconds(now))]), to: connection)
        case let .rateLimited(wait)?:
            reject(ProtocolError(.rateLimited, "refreshed too recently; try again in \(wait) s"), to: connection, session: session,
                   extra: ["retryAfter": .int(wait)])
        }
    }

    /// The role a presented key grants, or nil when it grants none.
    func role(for key: String?) -> Role? {
        guard let key, !key.isEmpty else { return nil }
        if config.auth.adminKeys.contains(where: { constantTimeEquals($0, key) }) { return .admin }
        if config.auth.serviceKeys.contains(where: { constantTimeEquals($0, key) }) { return .service }
        return nil
    }

    static func bearer(_ header: String) -> String? {
        for prefix in ["Bearer ", "Api-Key "] where header.hasPrefix(prefix) { return String(header.dropFirst(prefix.count)) }
        return nil
    }

    // MARK: REST for sessions

    private func requireRole(_ request: HTTPRequest, _ needed: Role) -> HTTPResponse? {
        if demoMode { return nil }
        let key = request.headers["authorization"].flatMap(Self.bearer)
        guard let role = role(for: key) else { return .error(401, "missing or unknown API key (Authorization: Bearer KEY)") }
        return role >= needed ? nil : .error(403, "this needs the \(needed.rawValue) role")
    }

    private func refreshCycle(_ request: HTTPRequest, connection: ConnectionID) -> HTTPResponse? {
        if let denied = requireRole(request, .service) { return denied }
        runtime.runCycle { [server] results in
            let body: [String: Any] = [
                "success": true, "total_instances": results.count,
                "refreshed": results.filter(\.success).count, "failed": results.filter { !$0.success }.count,
                "results": results.map { r -> [String: Any] in
                    var o: [String: Any] = ["instance_name": r.instance, "success": r.success, "qr_updated": r.qrUpdated]
                    if let e = r.error { o["error"] = e }
                    return o
                },
            ]
            server.respond(connection, .json(200, body))
        }
        return nil
    }

    private func createSession(_ request: HTTPRequest) -> HTTPResponse {
        if let denied = requireRole(request, .admin) { return denied }
        guard let json = JSONValue.parse(request.body), case let .object(o) = json else { return .error(400, "body must be a JSON object") }
        if let extra = o.keys.sorted().first(where: { !["sessionId", "instanceName", "instanceToken", "numberId"].contains($0) }) {
            return .error(400, "unknown field \"\(extra.prefix(40))\"")
        }
        guard let id = o["sessionId"]?.stringValue, ClientMessage.isValidSessionID(id) else {
            return .error(400, "sessionId must be 1–128 characters of A–Z a–z 0–9 . _ : @ -")
        }
        let instance = o["instanceName"]?.stringValue ?? id
        guard ClientMessage.isValidSessionID(instance) else { return .error(400, "instanceName has characters an instance name cannot carry") }
        guard runtime.add(id: id, instanceName: instance, instanceToken: o["instanceToken"]?.stringValue, numberId: o["numberId"]?.stringValue) else {
            return .error(409, "session \(id) already exists")
        }
        return .json(201, ["success": true, "data": ["sessionId": id, "status": runtime.registry[id]?.machine.status.rawValue ?? "pending"]])
    }

    private func reject(_ error: ProtocolError, to connection: ConnectionID, session: String? = nil, extra: [String: JSONValue] = [:]) {
        send(ServerMessage.error(error, now: Date(), session: session, extra: extra), to: connection)
    }

    private func send(_ bytes: [UInt8], to connection: ConnectionID) {
        server.send(WireFrame(bytes), to: connection)
    }
}

extension Gateway: HubTransport {
    /// One WireFrame for every subscriber: the event is encoded and copied once.
    public func send(_ bytes: [UInt8], to subscribers: [UInt64], coalesceKey: String?) {
        let frame = WireFrame(bytes)
        for id in subscribers { server.send(frame, to: id, coalesceKey: coalesceKey) }
    }
}
