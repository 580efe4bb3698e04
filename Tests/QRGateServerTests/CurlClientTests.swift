import Foundation
import Testing
import QRGateHTTP

/// The libcurl wrapper against real loopback peers.
@Suite(.serialized) struct CurlClientTests {
    @Test func refusedConnectionIsTyped() throws {
        // Bind then close a listener: the port is free and nothing answers on it.
        let port = try QuietListener().closeAndReturnPort()
        let r = HTTPClient.perform(ClientRequest(url: "http://127.0.0.1:\(port)/", timeoutSeconds: 2))
        #expect(r.failure == .connectionRefused)
    }

    @Test func silentPeerTimesOut() throws {
        let listener = try QuietListener()
        let started = ContinuousClock.now
        let r = HTTPClient.perform(ClientRequest(url: "http://127.0.0.1:\(listener.port)/", timeoutSeconds: 0.5))
        #expect(r.failure == .timeout(seconds: 0.5))
        #expect(ContinuousClock.now - started < .seconds(5))
        withExtendedLifetime(listener) {}
    }

    @Test func oversizeBodyIsRefused() async throws {
        let s = try await TestServer()
        let r = HTTPClient.perform(ClientRequest(url: s.base + "/api/v1/qr?text=big&format=png", maxResponseBytes: 64))
        #expect(r.failure == .bodyTooLarge(limit: 64))
    }

    @Test func postsBodiesAndHeaders() async throws {
        let s = try await TestServer()
        let r = try HTTPClient.perform(ClientRequest(method: "POST", url: s.base + "/api/v1/qr", headers: [("Content-Type", "application/json")],
                                                     body: Array("{}".utf8))).get()
        #expect(r.status == 405) // GET only: answered with the methods it takes, not hung, body read
        #expect(r.text.contains("use GET"))
        let bad = HTTPClient.perform(ClientRequest(url: s.base + "/", headers: [("X-Evil", "a\r\nInjected: yes")]))
        #expect(bad.failure == .invalidRequest("header X-Evil contains a line break"))
        #expect(HTTPClient.perform(ClientRequest(url: "ftp://127.0.0.1/")).failure == .invalidRequest("URL must start with http:// or https://"))
    }
}

extension Result {
    var failure: Failure? { if case let .failure(f) = self { return f }; return nil }
}

/// A TCP socket that listens but never accepts or answers: a peer that hangs.
final class QuietListener {
    let fd: Int32
    let port: Int

    init() throws {
        let sock = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sp in
                bind(sock, sp, len) == 0 && listen(sock, 8) == 0 && getsockname(sock, sp, &len) == 0
            }
        }
        fd = sock
        guard ok else { close(sock); throw POSIXError(.EADDRNOTAVAIL) }
        port = Int(UInt16(bigEndian: addr.sin_port))
    }

    func closeAndReturnPort() -> Int {
        close(fd)
        return port
    }

    deinit { close(fd) }
}
