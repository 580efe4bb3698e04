import Foundation
import Logging
import QRGateCore

/// Wires configuration, the libwebsockets server and the gateway together; what `qrgate serve` runs
/// and what integration tests start in-process.
public final class GatewayApp: @unchecked Sendable {
    public let server: LWSServer
    public let gateway: Gateway
    public let logger: Logger

    public init(config: Config, host: String, port: Int, staticDir: String, logger: Logger) throws {
        self.logger = logger
        let files = try StaticFiles(directory: staticDir)
        server = LWSServer(options: LWSServerOptions(
            host: host, port: port,
            maxMessageBytes: config.server.maxMessageBytes, maxBodyBytes: config.server.maxBodyBytes,
            outboxLimit: config.server.outboxLimit, pingIntervalSeconds: config.server.pingIntervalSeconds,
            tlsCertPath: config.server.tlsCert.isEmpty ? nil : config.server.tlsCert,
            tlsKeyPath: config.server.tlsKey.isEmpty ? nil : config.server.tlsKey), logger: logger)
        gateway = Gateway(config: config, server: server, staticFiles: files, logger: logger)
    }

    /// Starts listening; returns the bound port.
    public func start() throws -> Int { try server.start() }
    public func stop() { server.stop() }
    public func waitUntilStopped() { server.waitUntilStopped() }
}
