import Foundation
import Logging
import QRGateCore
import QRGateHTTP
import QRGateServer
import QRGateUpstream
@_exported import QRGateTestSupport

/// The simulator alone on 127.0.0.1 and an ephemeral port.
final class RunningSimulator {
    let server: SimulatorServer
    let port: Int
    var base: String { "http://127.0.0.1:\(port)" }

    init(_ json: String = "{}") throws {
        let config = try Config.load(fileContents: Data(json.utf8), environment: [:])
        var logger = Logger(label: "sim-test")
        logger.logLevel = .warning
        server = SimulatorServer(config: config, host: "127.0.0.1", port: 0, logger: logger)
        port = try server.start()
    }

    deinit { server.stop() }

    @discardableResult
    func post(_ path: String, _ json: String = "{}", key: String = "qrgate-simulator-key") throws -> ClientResponse {
        try HTTPClient.perform(ClientRequest(method: "POST", url: base + path, headers: [("apikey", key), ("Content-Type", "application/json")],
                                             body: Array(json.utf8), timeoutSeconds: 5)).get()
    }

    func delete(_ path: String) throws {
        _ = try HTTPClient.perform(ClientRequest(method: "DELETE", url: base + path, timeoutSeconds: 5)).get()
    }

    func client(key: String = "qrgate-simulator-key", timeout: Double = 3, concurrency: Int = 32, tokenURL: String = "",
                now: @escaping @Sendable () -> Date = { Date() }) -> EvolutionClient {
        let http = CurlMulti(maxConcurrent: concurrency)
        let creds = UpstreamCredentials(staticKey: key, tokenURL: tokenURL, clientId: "qrgate", clientSecret: "qrgate-simulator-secret",
                                        timeoutSeconds: timeout, http: http, now: now)
        return EvolutionClient(baseURL: base, credentials: creds, http: http, timeoutSeconds: timeout, maxResponseBytes: 256 * 1024)
    }
}

/// A clock tests move by hand.
final class ManualClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current = Date(timeIntervalSince1970: 1_800_000_000)
    var now: Date { lock.lock(); defer { lock.unlock() }; return current }
    func advance(_ seconds: TimeInterval) { lock.lock(); current += seconds; lock.unlock() }
}

/// Collects values from other threads.
final class Collector<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    func append(_ t: T) { lock.lock(); items.append(t); lock.unlock() }
    var all: [T] { lock.lock(); defer { lock.unlock() }; return items }

    /// Waits (bounded) until `predicate` holds for the collected items.
    func wait(seconds: Double, until predicate: ([T]) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if predicate(all) { return true }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return predicate(all)
    }

    /// The same wait without holding a thread of the shared pool (for async tests: the gateway's
    /// loops must be able to resume their tasks meanwhile).
    func waitAsync(seconds: Double, until predicate: ([T]) -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if predicate(all) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return predicate(all)
    }
}

extension Result {
    var failure: Failure? { if case let .failure(f) = self { return f }; return nil }
    var success: Success? { if case let .success(s) = self { return s }; return nil }
}
