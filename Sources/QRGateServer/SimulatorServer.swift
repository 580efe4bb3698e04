import Foundation
import Logging
import QRGateCore
import QRGateHTTP
import QRGateQR
import QRGateUpstream

/// `qrgate simulate`: the Evolution API simulator alone on its own port.
public final class SimulatorServer: LWSServerDelegate, @unchecked Sendable {
    public let server: LWSServer
    public let host: SimulatorHost
    let http: CurlMulti
    let timers: LoopTimers

    public init(config: Config, host: String, port: Int, logger: Logger) {
        server = LWSServer(options: LWSServerOptions(host: host, port: port, maxBodyBytes: config.server.maxBodyBytes), logger: logger)
        http = CurlMulti(maxConcurrent: 8)
        let server = server
        timers = LoopTimers(arm: { [weak server] us in server?.wake(afterMicroseconds: us) })
        let renderer = QRRenderer(style: QRStyle(correction: QRErrorCorrection(rawValue: config.qr.errorCorrection) ?? .medium,
                                                 quietZone: config.qr.quietZone, moduleSize: config.qr.moduleSize))
        self.host = SimulatorHost(simulator: EvolutionSimulator(config: config.simulator, renderer: renderer),
                                  server: server, timers: timers, http: http, logger: logger)
        server.delegate = self
    }

    public func start() throws -> Int { try server.start() }
    public func stop() { server.stop(); http.shutdown() }
    public func waitUntilStopped() { server.waitUntilStopped() }

    public func http(_ request: HTTPRequest, connection: ConnectionID) -> HTTPResponse? {
        if request.path == "/healthz" { return .json(200, ["status": "ok", "simulator": true]) }
        guard EvolutionSimulator.handles(request.path) else { return .error(404, "not found: \(request.path.prefix(200))") }
        return host.http(request, connection: connection)
    }

    public func webSocketShouldAccept(_ info: WebSocketInfo) -> (status: Int, reason: String)? { (404, "no WebSocket here") }
    public func webSocketOpened(_ connection: ConnectionID, info: WebSocketInfo) {}
    public func webSocketReceived(_ connection: ConnectionID, message: [UInt8], binary: Bool) {}
    public func webSocketClosed(_ connection: ConnectionID) {}
    public func timerFired() { timers.fire() }
}
