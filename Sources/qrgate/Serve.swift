import ArgumentParser
import Foundation
import Logging
import QRGateCore
import QRGateServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway.")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on; 0 picks a free one.") var port = 8080
    @Option(help: "Configuration file (JSON).") var config = "Config/qrgate.json"
    @Option(name: .customLong("static-dir"), help: "Directory of the served page.") var staticDir = "static"

    func run() async throws {
        ShutdownSignals.block()
        let cfg: Config
        do {
            cfg = try Config.load(path: config, required: config != "Config/qrgate.json",
                                  environment: ProcessInfo.processInfo.environment)
        } catch {
            throw ValidationError(error.description)
        }
        let logger = Logging.bootstrap(level: cfg.log.level)
        raiseOpenFilesLimit()
        let app = try await GatewayApp(config: cfg, host: host, port: port, staticDir: staticDir, logger: logger)
        ShutdownSignals.onSignal { app.stop() }
        let port = try app.start()
        // One line on stdout, flushed at once: scripts and tests read the real port from it.
        let scheme = cfg.server.tlsCert.isEmpty ? "http" : "https"
        FileHandle.standardOutput.write(Data("listening on \(scheme)://\(host):\(port)\n".utf8))
        await app.stopped()
        logger.info("stopped")
    }
}

/// Each connection is a file: lift the soft limit to the hard one before libwebsockets sizes its tables.
private func raiseOpenFilesLimit() {
    var l = rlimit()
    getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &l)
    l.rlim_cur = l.rlim_max
    setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &l)
}
