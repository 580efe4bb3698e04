import ArgumentParser
import Foundation
import QRGateCore
import QRGateServer

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the Evolution API simulator alone (for trying the gateway's evolution mode).")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on; 0 picks a free one.") var port = 8081
    @Option(help: "Configuration file (JSON); its simulator section applies.") var config = "Config/qrgate.json"

    func run() throws {
        ShutdownSignals.block()
        let cfg: Config
        do {
            cfg = try Config.load(path: config, required: config != "Config/qrgate.json", environment: ProcessInfo.processInfo.environment)
        } catch {
            throw ValidationError(error.description)
        }
        let logger = Logging.bootstrap(level: cfg.log.level)
        let sim = SimulatorServer(config: cfg, host: host, port: port, logger: logger)
        ShutdownSignals.onSignal { sim.stop() }
        let bound = try sim.start()
        FileHandle.standardOutput.write(Data("simulator listening on http://\(host):\(bound)\n".utf8))
        sim.waitUntilStopped()
    }
}
