import Foundation
import Logging
import QRGateCore
import QRGateQR
import QRGateHTTP
import QRGateUpstream
import Synchronization

/// The gateway's behaviour behind one libwebsockets loop: HTTP routes, the WebSocket protocol, the
/// sessions and their subscribers. An actor whose executor is the loop, so everything it owns (the
/// runtime, registry, hub, peers, the Supabase endpoint, the in-process simulator) is checked by the
/// compiler to be touched only there. lws calls it synchronously on the loop thread through the
/// `nonisolated` delegate methods below, which enter with `assumeIsolated` (checked at run time).
public actor Gateway: LWSServerDelegate {
    public nonisolated let config: Config
    nonisolated let server: LWSServer
    let staticFiles: StaticFiles
    let renderer: QRRenderer
    let logger: Logger
    let clock: any GatewayClock
    let startedAt: Date
    /// Changes with every start: a client that sees a new one knows its `since` numbers come from another run.
    public nonisolated let bootId = UUID().uuidString.lowercased()
    let timers: LoopTimers
    /// The in-process simulator (upstream.mode = simulator), served on this port.
    let simulatorHost: SimulatorHost?
    /// Where parsed webhook events go (the session layer; tests observe them here).
    var upstreamEventObserver: ((UpstreamEvent) -> Void)?
    let hub = Hub()
    let fanout: SocketFanout
    let runtime: SessionRuntime
    /// No keys configured and a loopback bind: everyone is admin.
    public nonisolated let demoMode: Bool
    let auth: Authenticator
    let credentials: UpstreamCredentials
    let metrics: GatewayMetrics
    let realtime: RealtimeEndpoint
    let http: CurlMulti
    var sockets: [ConnectionID: Peer] = [:]
    var echoSockets: Set<ConnectionID> = []
    /// Numbers the snapshot streams of firehose subscriptions.
    var nextStream = 0
    /// Open WebSockets per peer address: counted here, read by every loop's handshakes.
    nonisolated let socketsPerIP = Mutex<[String: Int]>([:])

    public nonisolated var unownedExecutor: UnownedSerialExecutor { server.executor.asUnownedSerialExecutor() }

    /// One WebSocket peer: who it is, what it may see, how fast it talks, and its snapshot streams.
    struct Peer {
        var info: WebSocketInfo
        /// What its credentials grant (keys and browser tokens presented so far; none: a browser).
        var grants: [Principal] = []
        var tokens: Double
        var lastRefill: Date
        /// Prefixes subscribed for a tenant key's "*" (an unscoped "*" is the hub's own key).
        var starPrefixes: [String] = []
        /// Prefixes subscribed by name (`"prefix"`); the hub counts them apart from `starPrefixes`.
        var explicitPrefixes: Set<String> = []
        var streams: [Int: SnapshotStream] = [:]
        /// The stream of each batch in flight, oldest first (their writes are reported in this order).
        var batchesInFlight: [Int] = []

        var role: Role { grants.map(\.role).max() ?? .browser }
        func canSee(_ session: String) -> Bool { grants.contains { $0.canSee(session) } }
        func can(_ role: Role, _ session: String) -> Bool { grants.contains { $0.can(role, session) } }

        /// What "*" means for these credentials: nil for every session, else the tenant prefixes.
        var everySessionScope: [String]? {
            let keys = grants.filter { $0.role >= .service }
            if keys.contains(where: { $0.prefix == nil }) { return nil }
            return Array(Set(keys.compactMap(\.prefix))).sorted()
        }

        /// Whether a key lets it watch every session starting with `prefix`.
        func covers(prefix: String) -> Bool {
            grants.contains { $0.role >= .service && ($0.prefix.map { prefix.hasPrefix($0) } ?? true) }
        }

        mutating func grant(_ p: Principal) {
            if !grants.contains(p), grants.count < 16 { grants.append(p) }
        }
    }

    public init(config: Config, server: LWSServer, staticFiles: StaticFiles, http: CurlMulti, demoMode: Bool, auth: Authenticator,
                credentials: UpstreamCredentials, store: SessionStore, cluster: (any SessionCluster)? = nil, metrics: GatewayMetrics,
                clock: any GatewayClock = SystemClock(),
                logger: Logger) {
        self.metrics = metrics
        self.http = http
        self.demoMode = demoMode
        self.auth = auth
        self.credentials = credentials
        self.config = config
        self.server = server
        self.staticFiles = staticFiles
        self.logger = logger
        self.clock = clock
        startedAt = clock.now()
        renderer = QRRenderer(style: QRStyle(correction: QRErrorCorrection(rawValue: config.qr.errorCorrection) ?? .medium, quietZone: config.qr.quietZone, moduleSize: config.qr.moduleSize))
        let timers = LoopTimers(clock: clock, arm: { [weak server] us in server?.wake(afterMicroseconds: us) })
        self.timers = timers
        let frames = QRFrameFactory(renderer: renderer)
        simulatorHost = config.upstream.mode == .simulator
            ? SimulatorHost(simulator: EvolutionSimulator(config: config.simulator, frames: frames),
                            server: server, timers: timers, http: http, logger: logger)
            : nil
        let rules = SessionRules(ttlSeconds: Double(config.qr.ttlSeconds), maxAttempts: config.qr.maxAttempts,
                                 countdownIntervalSeconds: Double(config.qr.countdownIntervalSeconds),
                                 pollIntervalSeconds: config.poll.intervalSeconds, refreshMinIntervalSeconds: config.refresh.minIntervalSeconds,
                                 backoffMaxSeconds: config.poll.backoffMaxSeconds, connectedCheckSeconds: config.poll.connectedIntervalSeconds,
                                 pollAfterWebhookSeconds: config.poll.afterWebhookSeconds, expiryCheckSeconds: config.qr.expiryCheckSeconds)
        runtime = SessionRuntime(registry: SessionRegistry(rules: rules, hub: hub, logCapacity: config.events.logCapacity,
                                                                 logMaxBytes: config.events.maxBytesPerSession),
                                 timers: timers, frames: frames,
                                 cycleSeconds: config.refresh.cycleSeconds, store: store, metrics: metrics, logger: logger)
        runtime.cluster = cluster
        runtime.orderTimeoutSeconds = config.cluster.orderTimeoutSeconds
        realtime = RealtimeEndpoint(server: server, auth: auth, registry: runtime.registry, demoMode: demoMode, clock: clock, logger: logger)
        fanout = SocketFanout(server: server)
        hub.transport = fanout
        hub.add(consumer: realtime)
        server.delegate = self
    }

    /// Runs on the loop once listening: the upstream client, the configured sessions, the cycle.
    /// `ownWebhookURL`: this gateway's `/webhooks/evolution`, where the embedded simulator's webhooks go
    /// unless `simulator.webhookURL` names another place.
    func begin(upstream: any SessionUpstream, restoring stored: [(StoredSession, [StoredEvent])], ownWebhookURL: String) {
        runtime.upstream = upstream
        if let sim = simulatorHost?.simulator, config.simulator.webhooks, config.simulator.webhookURL.isEmpty {
            sim.webhookURL = ownWebhookURL
        }
        // In process, the simulator's picture would be this gateway's own drawing of the same code, sent to
        // itself: by default its webhooks carry the code, and the picture is drawn when someone wants it.
        if let sim = simulatorHost?.simulator { sim.webhookPictures = config.simulator.webhookPictures == "always" }
        runtime.restore(from: stored, isolation: self)
        for seed in config.sessions where runtime.registry[seed.sessionId] == nil {
            runtime.add(id: seed.sessionId, instanceName: seed.instanceName ?? seed.sessionId, instanceToken: seed.instanceToken,
                        numberId: seed.numberId, isolation: self)
        }
        if config.upstream.mode == .simulator, !config.demoSession.isEmpty, runtime.registry[config.demoSession] == nil {
            runtime.add(id: config.demoSession, instanceName: config.demoSession, instanceToken: nil, numberId: nil, isolation: self)
        }
        if let cluster = runtime.cluster {
            // The cluster's signals, in the order it sends them, handled on this loop.
            let (signals, sink) = AsyncStream<ClusterSignal>.makeStream()
            cluster.start { sink.yield($0) }
            Task {
                for await signal in signals {
                    self.runtime.handle(signal, isolation: self)
                }
            }
        }
        runtime.startCycle(isolation: self)
        runtime.startHoldWatch(isolation: self)
        runtime.startCountdowns(every: Double(config.qr.countdownIntervalSeconds), isolation: self)
    }

    /// Tests watch the webhook events the gateway parses.
    public func observeUpstreamEvents(_ observer: @escaping @Sendable (UpstreamEvent) -> Void) {
        upstreamEventObserver = observer
    }

    /// Webhook news for the sessions of that instance.
    func deliver(_ event: UpstreamEvent) {
        upstreamEventObserver?(event)
        runtime.deliver(event, isolation: self)
    }

    // MARK: Entry points from the loop (its thread, synchronously)

    public nonisolated func http(_ request: HTTPRequest, connection: ConnectionID) -> HTTPResponse? {
        assumeIsolated { $0.route(request, connection: connection) }
    }

    /// On the handshake's own loop (any of them): only Sendable state.
    public nonisolated func webSocketShouldAccept(_ info: WebSocketInfo) -> (status: Int, reason: String)? {
        shouldAccept(info)
    }

    public nonisolated func webSocketOpened(_ connection: ConnectionID, info: WebSocketInfo) {
        assumeIsolated { $0.opened(connection, info: info) }
    }

    public nonisolated func webSocketReceived(_ connection: ConnectionID, message: [UInt8], binary: Bool) {
        assumeIsolated { $0.received(connection, message: message, binary: binary) }
    }

    public nonisolated func webSocketClosed(_ connection: ConnectionID) {
        assumeIsolated { $0.closed(connection) }
    }

    public nonisolated func webSocketWritten(_ connection: ConnectionID) {
        assumeIsolated { $0.batchWritten(connection) }
    }

    public nonisolated func timerFired() {
        assumeIsolated { $0.timers.fire() }
    }

    // MARK: HTTP

    /// A browser asking whether a page on `origin` may call the API: yes for `server.allowedOrigins`
    /// (the loop adds `Access-Control-Allow-Origin` to the answer), a 403 with the reason otherwise.
    func preflight(_ request: HTTPRequest, origin: String) -> HTTPResponse {
        guard config.server.allowedOrigins.contains(origin) else {
            return .error(403, "origin \(origin.prefix(200)) is not in server.allowedOrigins")
        }
        return HTTPResponse(status: 204, contentType: "text/plain", headers: [
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            ("Access-Control-Allow-Headers", "Authorization, Content-Type, apikey"),
            ("Access-Control-Max-Age", "600"),
        ], body: .bytes([]))
    }

    func route(_ request: HTTPRequest, connection: ConnectionID) -> HTTPResponse? {
        if request.method == .options, let origin = request.headers["origin"], request.headers["access-control-request-method"] != nil {
            return preflight(request, origin: origin)
        }
        if let api = sessionsAPI(request, connection: connection) { return api.response }
        switch (request.method, request.path) {
        case (.get, "/healthz"), (.head, "/healthz"):
            return .json(200, ["status": "ok", "version": QRGateVersion.string,
                               "uptimeSeconds": Int(clock.now().timeIntervalSince(startedAt)),
                               "websockets": sockets.count, "loops": server.loops.count, "sessions": runtime.registry.sessions.count])
        case (.get, "/metrics"):
            return metricsEndpoint(connection: connection)
        case (.get, "/readyz"):
            return readyz(connection: connection)
        case (.get, "/api/v1/qr"):
            return qrImage(request)
        case (.post, "/webhooks/evolution"):
            return webhook(request)
        case (.post, "/functions/v1/refresh-qr-codes"):
            return refreshCycle(request, connection: connection)
        default:
            break
        }
        if let simulatorHost, EvolutionSimulator.handles(request.path) {
            return simulatorHost.http(request, connection: connection, isolation: self)
        }
        let bare = request.path.count > 1 && request.path.hasSuffix("/") ? String(request.path.dropLast()) : request.path
        if let allowed = Self.allowedMethods(bare), !allowed.contains(request.method) { return .methodNotAllowed(request, allowed: allowed) }
        if request.path.hasPrefix("/api/") {
            return .error(404, "no such endpoint: \(request.method.rawValue) \(request.path.prefix(200))")
        }
        guard request.method == .get || request.method == .head else {
            return .methodNotAllowed(request, allowed: [.get, .head])
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
}

/// The hub's transport: the same bytes to every subscriber, copied once per loop that has some.
/// Not Sendable: owned by the gateway actor with the hub.
final class SocketFanout: HubTransport {
    let server: LWSServer
    init(server: LWSServer) { self.server = server }
    func send(_ bytes: [UInt8], to subscribers: [UInt64], coalesceKey: String?) {
        server.send(WireFrame(bytes), to: subscribers, coalesceKey: coalesceKey)
    }
}
