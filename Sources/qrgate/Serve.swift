import ArgumentParser
import Foundation
import Logging
import QRGateCore
import QRGateServer
import Synchronization

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway.")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on; 0 picks a free one.") var port = 8080
    @Option(help: "Configuration file (JSON).") var config = "Config/qrgate.json"
    @Option(name: .customLong("static-dir"), help: "Directory of the served page.") var staticDir = "static"

    func run() throws {
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
        let (bindHost, bindPort, staticDir) = (host, port, staticDir)
        let app = try startUp { try await GatewayApp(config: cfg, host: bindHost, port: bindPort, staticDir: staticDir, logger: logger) }
        ShutdownSignals.onSignal { app.stop() }
        let port = try app.start()
        // One line on stdout, flushed at once: scripts and tests read the real port from it.
        let scheme = cfg.server.tlsCert.isEmpty ? "http" : "https"
        FileHandle.standardOutput.write(Data("listening on \(scheme)://\(host):\(port)\n".utf8))
        app.waitUntilStopped()
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

/// Start-up work that is async (jwt-kit resolves keys in an actor; PostgreSQL), run from the synchronous main thread.
/// The main thread is not one of the pool's: waiting on it holds no pool thread, and it keeps the
/// signal mask `ShutdownSignals.block()` gave it, which an async `main` would not.
func startUp<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) throws -> T {
    let outcome = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let r: Result<T, any Error>
        do { r = .success(try await work()) } catch { r = .failure(error) }
        outcome.withLock { $0 = r }
        done.signal()
    }
    done.wait()
    return try outcome.withLock { $0! }.get()
}
