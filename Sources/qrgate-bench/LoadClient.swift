import Foundation

/// N WebSocket subscribers on one client pool, measuring each matching message's latency from the
/// `timestamp` it carries (server clock, epoch ms) to its receipt here.
final class LoadClient: LWSClientPoolDelegate, @unchecked Sendable {
    struct Target { var host: String; var port: Int; var path: String }

    let pool: LWSClientPool
    let target: Target
    let match: [UInt8]
    /// What client i sends once open (a subscribe), if anything.
    let hello: (Int) -> [UInt8]?
    private let lock = NSLock()
    private(set) var opened = 0
    private(set) var failed = 0
    /// Handshakes tried again after a failure (reported, so a flaky server shows).
    private(set) var retried = 0
    private(set) var closed = 0
    private var ready = Set<Int>()
    private var latencies: [Double] = []
    private var received = 0
    private var bytes = 0
    private var perClient: [Int: Int] = [:]
    private var pendingConnects: [Int] = []
    private var inFlight = 0
    /// Handshakes in flight at once.
    var maxInFlightConnects = 256
    /// Times a failed handshake is tried again before it counts as failed (pool thread only).
    var connectRetries = 0
    private var retriesLeft: [Int: Int] = [:]

    init(target: Target, match: String, libev: Bool = true, hello: @escaping (Int) -> [UInt8]?) {
        pool = LWSClientPool(libev: libev)
        self.target = target
        self.match = Array(match.utf8)
        self.hello = hello
        pool.delegate = self
    }

    func start(clients: Int) throws {
        try pool.start()
        pool.post { [self] in
            pendingConnects = Array(0..<clients)
            pump()
        }
    }

    /// Connects in waves so the server's accept backlog is never flooded.
    private func pump() {
        while inFlight < maxInFlightConnects, !pendingConnects.isEmpty {
            let id = pendingConnects.removeLast()
            inFlight += 1
            pool.connect(id, host: target.host, port: target.port, path: target.path)
        }
    }

    func clientOpened(_ id: Int) {
        inFlight -= 1
        lock.lock(); opened += 1; lock.unlock()
        if let h = hello(id) { pool.send(id, h) } else { lock.lock(); ready.insert(id); lock.unlock() }
        pump()
    }

    func clientReceived(_ id: Int, message: [UInt8]) {
        let now = Date().timeIntervalSince1970 * 1000
        lock.lock(); defer { lock.unlock() }
        if !ready.contains(id), Self.contains(message, Array("\"subscribed\"".utf8)) || Self.contains(message, Array("snapshot".utf8)) {
            ready.insert(id)
        }
        guard Self.contains(message, match), let ts = Self.timestamp(message) else { return }
        latencies.append(now - ts)
        received += 1
        bytes += message.count
        perClient[id, default: 0] += 1
    }

    func clientFailed(_ id: Int, reason: String) {
        inFlight -= 1
        let left = retriesLeft[id] ?? connectRetries
        if left > 0 {
            retriesLeft[id] = left - 1
            pendingConnects.insert(id, at: 0)
            lock.lock(); retried += 1; lock.unlock()
            return pump()
        }
        lock.lock(); failed += 1; if firstFailure == nil { firstFailure = reason }; lock.unlock()
        pump()
    }

    /// Why the first failed connection failed (lws's words), for the error message.
    private(set) var firstFailure: String?

    func clientClosed(_ id: Int) { lock.lock(); closed += 1; lock.unlock() }

    var readyCount: Int { lock.lock(); defer { lock.unlock() }; return ready.count }

    /// Latencies and counts collected so far, cleared.
    func take() -> (latencies: [Double], received: Int, bytes: Int, clientsReached: Int) {
        lock.lock(); defer { lock.unlock() }
        let r = (latencies, received, bytes, perClient.count)
        latencies = []; received = 0; bytes = 0; perClient = [:]
        return r
    }

    func stop() { pool.stop() }

    static func contains(_ hay: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, hay.count >= needle.count else { return needle.isEmpty }
        let first = needle[0]
        var i = 0
        let last = hay.count - needle.count
        while i <= last {
            if hay[i] == first && hay[i..<(i + needle.count)].elementsEqual(needle) { return true }
            i += 1
        }
        return false
    }

    /// The number after `"timestamp":`; a scan, so the client spends its CPU on sockets, not parsing.
    static func timestamp(_ m: [UInt8]) -> Double? {
        let key = Array("\"timestamp\":".utf8)
        guard m.count > key.count else { return nil }
        var i = 0
        while i + key.count < m.count {
            if m[i] == 0x22 && m[i..<(i + key.count)].elementsEqual(key) {
                var j = i + key.count, v: Double = 0, any = false
                while j < m.count, m[j] == 0x20 { j += 1 }
                while j < m.count, m[j] >= 0x30, m[j] <= 0x39 { v = v * 10 + Double(m[j] - 0x30); j += 1; any = true }
                return any ? v : nil
            }
            i += 1
        }
        return nil
    }
}
