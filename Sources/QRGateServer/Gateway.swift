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
    private var sockets: [ConnectionID: WebSocketInfo] = [:]
    private var echoSockets: Set<ConnectionID> = []

    public init(config: Config, server: LWSServer, staticFiles: StaticFiles, http: CurlMulti, logger: Logger) {
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
        server.delegate = self
    }

    // MARK: HTTP

    public func http(_ request: HTTPRequest, connection: ConnectionID) -> HTTPResponse? {
        switch (request.method, request.path) {
        case (.get, "/healthz"), (.head, "/healthz"):
            return .json(200, ["status": "ok", "version": QRGateVersion.string,
                               "uptimeSeconds": Int(Date().timeIntervalSince(startedAt)),
                               "websockets": sockets.count])
        case (.get, "/api/v1/qr"):
            return qrImage(request)
        case (.post, "/webhooks/evolution"):
            return webhook(request)
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
        sockets[connection] = info
        send(ServerMessage.hello(connectionID: connection, now: Date(), maxMessageBytes: config.server.maxMessageBytes, role: "browser"), to: connection)
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
        case .subscribe, .unsubscribe, .refresh:
            reject(ProtocolError(.unknownSession, "no sessions are served yet"), to: connection)
        }
    }

    public func webSocketClosed(_ connection: ConnectionID) {
        sockets[connection] = nil
        echoSockets.remove(connection)
    }

    public func timerFired() { timers.fire() }

    private func reject(_ error: ProtocolError, to connection: ConnectionID) {
        send(ServerMessage.error(error, now: Date()), to: connection)
    }

    private func send(_ bytes: [UInt8], to connection: ConnectionID) {
        server.send(WireFrame(bytes), to: connection)
    }
}
