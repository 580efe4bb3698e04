import Foundation
import Logging
import QRGateCore
import QRGateHTTP
import QRGateQR
import QRGateUpstream

/// `qrgate simulate`: the Evolution API simulator alone on its own port. An actor on its loop's executor.
public actor SimulatorServer: LWSServerDelegate {
    public nonisolated let server: LWSServer
    let http: CurlMulti
    let timers: LoopTimers
    let host: SimulatorHost

    public nonisolated var unownedExecutor: UnownedSerialExecutor { server.executor.asUnownedSerialExecutor() }

    public init(config: Config, host: String, port: Int, logger: Logger) {
        let server = LWSServer(options: LWSServerOptions(host: host, port: port, maxBodyBytes: config.server.maxBodyBytes), logger: logger)
        self.server = server
        let http = CurlMulti(maxConcurrent: 8)
        self.http = http
        let timers = LoopTimers(clock: SystemClock(), arm: { [weak server] us in server?.wake(afterMicroseconds: us) })
        self.timers = timers
        let renderer = QRRenderer(style: QRStyle(correction: QRErrorCorrection(rawValue: config.qr.errorCorrection) ?? .medium,
                                                 quietZone: config.qr.quietZone, moduleSize: config.qr.moduleSize))
        self.host = SimulatorHost(simulator: EvolutionSimulator(config: config.simulator, frames: QRFrameFactory(renderer: renderer)),
                                  server: server, timers: timers, http: http, logger: logger)
        server.delegate = self
    }

    public nonisolated func start() throws -> Int { try server.start() }
    public nonisolated func stop() { server.stop(); http.shutdown() }
    public nonisolated func waitUntilStopped() { server.waitUntilStopped() }

    // The loop calls these on its thread, where this actor runs: `assumeIsolated` checks that.

    public nonisolated func http(_ request: HTTPRequest, connection: ConnectionID) -> HTTPResponse? {
        assumeIsolated { me in
            if request.path == "/healthz" { return .json(200, ["status": "ok", "simulator": true]) }
            guard EvolutionSimulator.handles(request.path) else { return .error(404, "not found: \(request.path.prefix(200))") }
            return me.host.http(request, connection: connection, isolation: me)
        }
    }

    public nonisolated func webSocketShouldAccept(_ info: WebSocketInfo) -> (status: Int, reason: String)? { (404, "no WebSocket here") }
    public nonisolated func webSocketOpened(_ connection: ConnectionID, info: WebSocketInfo) {}
    public nonisolated func webSocketReceived(_ connection: ConnectionID, message: [UInt8], binary: Bool) {}
    public nonisolated func webSocketClosed(_ connection: ConnectionID) {}
    public nonisolated func webSocketWritten(_ connection: ConnectionID) {}
    public nonisolated func timerFired() { assumeIsolated { $0.timers.fire() } }
}
