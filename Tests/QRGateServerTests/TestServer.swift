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

/// A plain TCP connection to 127.0.0.1:`port`, and its server side when the server runs in this process.
final class LoopbackConnection {
    let fd: Int32
    let localPort: Int

    init(port: Int) throws {
        let sock = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp in
                connect(sock, sp, len) == 0 && getsockname(sock, sp, &len) == 0
            }
        }
        fd = sock
        guard ok else { close(sock); throw POSIXError(.ECONNREFUSED) }
        localPort = Int(UInt16(bigEndian: addr.sin_port))
    }

    deinit { close(fd) }

    /// The descriptor, among this process's, whose peer is this connection (the server's accepted socket).
    func serverSide() -> Int32? {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").compactMap(Int32.init)) ?? []
        return fds.first { candidate in
            guard candidate != fd else { return false }
            var addr = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(candidate, $0, &len) == 0 }
            }
            return ok && addr.sin_family == sa_family_t(AF_INET) && Int(UInt16(bigEndian: addr.sin_port)) == localPort
        }
    }
}

/// Whether TCP_NODELAY is set on a TCP socket.
func tcpNoDelay(_ fd: Int32) -> Bool {
    var v: Int32 = 0
    var len = socklen_t(MemoryLayout<Int32>.size)
    return getsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &v, &len) == 0 && v != 0
}
