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
    /// Changes with every start: a client that sees a new one knows its `since` numbers come from another run.
    public let bootId = UUID().uuidString.lowercased()
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
    public let auth: Authenticator
    public let credentials: UpstreamCredentials
    public let metrics: GatewayMetrics
    let realtime: RealtimeEndpoint
    let http: CurlMulti
    var sockets: [ConnectionID: Peer] = [:]
    var echoSockets: Set<ConnectionID> = []
    var socketsPerIP: [String: Int] = [:]

    /// One WebSocket peer: who it is and how fast it talks.
    struct Peer {
        var info: WebSocketInfo
        var role: Role
        /// Sessions opened by browser tokens.
        var sessions: Set<String> = []
        var tokens: Double
        var lastRefill: ContinuousClock.Instant
    }

    public init(config: Config, server: LWSServer, staticFiles: StaticFiles, http: CurlMulti, demoMode: Bool, auth: Authenticator,
                credentials: UpstreamCredentials, store: SessionStore, metrics: GatewayMetrics, logger: Logger) {
        self.metrics = metrics
        self.http = http
        self.demoMode = demoMode
        self.auth = auth
        self.credentials = credentials
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
                                 backoffMaxSeconds: config.poll.backoffMaxSeconds, connectedCheckSeconds: config.poll.connectedIntervalSeconds)
        runtime = SessionRuntime(registry: SessionRegistry(rules: rules, hub: hub, logCapacity: config.events.logCapacity),
                                 server: server, timers: timers, frames: QRFrameFactory(renderer: renderer),
                                 cycleSeconds: config.refresh.cycleSeconds, store: store, metrics: metrics, logger: logger)
        realtime = RealtimeEndpoint(server: server, auth: auth, registry: runtime.registry, demoMode: demoMode, logger: logger)
        hub.transport = self
        server.delegate = self
        runtime.onEvent = { [realtime] id, event, bytes in realtime.sessionEvent(id, event: event, eventBytes: bytes, now: Date()) }
        runtime.onAdded = { [realtime] id in realtime.sessionAdded(id, now: Date()) }
        onUpstreamEvent = { [weak self] in self?.runtime.deliver($0) }
        instanceToken = { [weak self] in self?.runtime.instanceToken(of: $0) }
    }

    /// Runs on the loop once listening: the upstream client, the configured sessions, the cycle.
    func begin(upstream: EvolutionClient, restoring stored: [(StoredSession, [StoredEvent])]) {
        runtime.upstream = upstream
        runtime.restore(from: stored)
        for seed in config.sessions where runtime.registry[seed.sessionId] == nil {
            runtime.add(id: seed.sessionId, instanceName: seed.instanceName ?? seed.sessionId, instanceToken: seed.instanceToken, numberId: seed.numberId)
        }
        if config.upstream.mode == "simulator", !config.demoSession.isEmpty, runtime.registry[config.demoSession] == nil {
            runtime.add(id: config.demoSession, instanceName: config.demoSession, instanceToken: nil, numberId: nil)
        }
        runtime.startCycle()
    }

    // MARK: HTTP

    public func http(_ request: HTTPRequest, connection: ConnectionID) -> HTTPResponse? {
        if let api = sessionsAPI(request, connection: connection) { return api.response }
        switch (request.method, request.path) {
        case (.get, "/healthz"), (.head, "/healthz"):
            return .json(200, ["status": "ok", "version": QRGateVersion.string,
                               "uptimeSeconds": Int(Date().timeIntervalSince(startedAt)),
                               "websockets": sockets.count, "sessions": runtime.registry.sessions.count])
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
}
