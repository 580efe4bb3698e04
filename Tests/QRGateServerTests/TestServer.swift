import Foundation
import Logging
import QRGateCore
import QRGateHTTP
@testable import QRGateServer

/// A real gateway on 127.0.0.1 and an ephemeral port, for one test.
final class TestServer {
    let app: GatewayApp
    let port: Int
    var base: String { "http://127.0.0.1:\(port)" }

    static var repoRoot: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent() }

    init(configJSON: String = "{}") async throws {
        var config = try Config.load(fileContents: Data(configJSON.utf8), environment: [:])
        config.store.mode = .memory
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        app = try await GatewayApp(config: config, host: "127.0.0.1", port: 0,
                             staticDir: TestServer.repoRoot.appendingPathComponent("static").path, logger: logger)
        port = try app.start()
    }

    deinit { app.stop() }

    func get(_ path: String, pathAsIs: Bool = false, maxBytes: Int = 1 << 20) throws -> ClientResponse {
        try HTTPClient.perform(ClientRequest(url: base + path, timeoutSeconds: 5, maxResponseBytes: maxBytes, pathAsIs: pathAsIs)).get()
    }

    func json(_ r: ClientResponse) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any] ?? [:]
    }
}
