internal import CWebSockets
import QRGateCore
import Foundation
import Logging

/// What the event loop calls. Every method runs on the service thread (the loop's executor).
public protocol LWSServerDelegate: AnyObject, Sendable {
    /// Answer now, or return nil and call `LWSServer.respond(_:_:)` later.
    func http(_ request: HTTPRequest, connection: ConnectionID) -> HTTPResponse?
    /// Accept a WebSocket handshake with nil, or refuse it with an HTTP status and a short reason.
    func webSocketShouldAccept(_ info: WebSocketInfo) -> (status: Int, reason: String)?
    func webSocketOpened(_ connection: ConnectionID, info: WebSocketInfo)
    func webSocketReceived(_ connection: ConnectionID, message: [UInt8], binary: Bool)
    func webSocketClosed(_ connection: ConnectionID)
    /// The timer armed with `LWSServer.wake(afterMicroseconds:)` fired.
    func timerFired()
}

/// Settings of the listening socket and its limits.
public struct LWSServerOptions: Sendable {
    public var host: String
    public var port: Int
    public var maxMessageBytes: Int
    public var maxBodyBytes: Int
    public var outboxLimit: Int
    public var pingIntervalSeconds: Int
    public var tlsCertPath: String?
    public var tlsKeyPath: String?

    public init(host: String, port: Int, maxMessageBytes: Int = 65536, maxBodyBytes: Int = 1 << 20,
                outboxLimit: Int = 64, pingIntervalSeconds: Int = 30, tlsCertPath: String? = nil, tlsKeyPath: String? = nil) {
        self.host = host; self.port = port; self.maxMessageBytes = maxMessageBytes; self.maxBodyBytes = maxBodyBytes
        self.outboxLimit = outboxLimit; self.pingIntervalSeconds = pingIntervalSeconds
        self.tlsCertPath = tlsCertPath; self.tlsKeyPath = tlsKeyPath
    }
}

public enum LWSServerError: Error, CustomStringConvertible {
    case contextFailed(String)
    public var description: String {
        switch self { case let .contextFailed(why): "could not start the server: \(why)" }
    }
}

/// The libwebsockets context, its service thread, and that thread as a Swift executor.
///
/// A thin wrapper of the C context. `@unchecked Sendable` because lws's own rule is the guard: the
/// connection table and the C objects are touched only on the service thread (inside lws callbacks or
/// jobs of `executor`, which `LoopExecutor.checkIsolated` asserts), and the only cross-thread entry
/// points, `stop()` and the executor's queue, go through `lock` and `lws_cancel_service`.
/// HTTP is in `LWSServer+HTTP.swift`, WebSocket framing and the outbox in `LWSServer+WebSocket.swift`,
/// the C callback dispatch in `LWSCallbacks.swift`.
public final class LWSServer: @unchecked Sendable {
    public let options: LWSServerOptions
    public weak var delegate: LWSServerDelegate?
    let logger: Logger
    /// Runs Swift jobs on the service thread; actors pinned here own the loop's state.
    public let executor = LoopExecutor()

    // Service thread only.
    var context: OpaquePointer?
    var connections: [ConnectionID: LWSConnection] = [:]
    private var nextID: ConnectionID = 1
    private var timer: UnsafeMutablePointer<qg_timer_t>?
    private var protocols: UnsafeMutablePointer<lws_protocols>?
    private var cStrings: [UnsafeMutablePointer<CChar>] = []
    private var retryPolicy: UnsafeMutablePointer<lws_retry_bo_t>?

    // Shared with other threads, under `lock`.
    private let lock = NSLock()
    private var stopping = false
    private var sharedContext: OpaquePointer?
    private var startFailure: Error?
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    /// Frames dropped because a newer one with the same coalescing key replaced them.
    public internal(set) var coalesced = 0
    /// Peers closed for reading too slowly.
    public internal(set) var slowConsumersClosed = 0

    /// The port actually bound (meaningful once `start()` returned).
    public private(set) var boundPort: Int = 0

    /// Largest piece lws hands the kernel in one `send`. Kept apart from the 1 KiB receive buffer, so a
    /// frame leaves whole when the kernel takes it (0 would mean "the receive buffer's size": an 11.8 KB
    /// QR frame in twelve writes, each waiting for its own WRITEABLE turn).
    static let txPacketSize = 65536

    public init(options: LWSServerOptions, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    deinit {
        protocols?.deallocate()
        retryPolicy?.deallocate()
        timer?.deallocate()
        cStrings.forEach { free($0) }
    }

    // MARK: - Life cycle (any thread)

    /// Creates the context on a new service thread and returns once it listens.
    @discardableResult
    public func start() throws -> Int {
        LWSLog.install(logger)
        let ready = DispatchSemaphore(value: 0)
        let t = Thread { [self] in
            var failed = false
            do { try createContext() } catch {
                failed = true
                lock.lock(); startFailure = error; lock.unlock()
            }
            ready.signal()
            if !failed { runLoop() }
            finished.signal()
        }
        t.name = "qrgate-lws"
        t.stackSize = 1 << 22
        lock.lock()
        thread = t
        lock.unlock()
        t.start()
        ready.wait()
        lock.lock()
        let failure = startFailure
        lock.unlock()
        if let failure { throw failure }
        return boundPort
    }

    /// Asks the loop to close every connection and end; waits until it has.
    public func stop() {
        lock.lock()
        let already = stopping
        stopping = true
        let ctx = sharedContext
        lock.unlock()
        if let ctx { lws_cancel_service(ctx) }
        if !already { waitUntilStopped() }
    }

    /// Blocks until the service loop has ended (after `stop()`). Any number of threads may wait:
    /// each waiter passes the signal on to the next.
    public func waitUntilStopped() {
        lock.lock()
        let started = thread != nil
        lock.unlock()
        guard started else { return }
        finished.wait()
        finished.signal()
    }

    // MARK: - Loop (service thread)

    private func createContext() throws {
        precondition(qg_lws_pre() > 0)
        let name = strdup("qrgate.v1")!
        cStrings.append(name)
        // One protocol handles HTTP and WebSocket: a client offering no subprotocol binds to protocols[0].
        let protos = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 2)
        protos.initialize(repeating: lws_protocols(), count: 2)
        protos[0].name = UnsafePointer(name)
        protos[0].callback = qgLWSCallback
        protos[0].per_session_data_size = MemoryLayout<UInt64>.size
        // Small per-connection receive buffer: client messages are small and reassembled in Swift anyway;
        // lws allocates this for every WebSocket, so it weighs on the footprint per idle subscriber.
        protos[0].rx_buffer_size = 1024
        protos[0].tx_packet_size = Self.txPacketSize
        protocols = protos

        let retry = UnsafeMutablePointer<lws_retry_bo_t>.allocate(capacity: 1)
        retry.initialize(to: lws_retry_bo_t())
        retry.pointee.secs_since_valid_ping = UInt16(clamping: max(1, options.pingIntervalSeconds))
        retry.pointee.secs_since_valid_hangup = UInt16(clamping: max(2, options.pingIntervalSeconds * 2))
        retryPolicy = retry

        let iface = strdup(options.host)!
        cStrings.append(iface)
        var info = lws_context_creation_info()
        info.port = Int32(options.port)
        info.iface = UnsafePointer(iface)
        info.protocols = UnsafePointer(protos)
        info.user = Unmanaged.passUnretained(self).toOpaque()
        info.retry_and_idle_policy = UnsafePointer(retry)
        info.options = UInt64(LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE)
            | UInt64(LWS_SERVER_OPTION_VALIDATE_UTF8)
            | UInt64(LWS_SERVER_OPTION_DISABLE_IPV6)
        info.timeout_secs = 10
        if let cert = options.tlsCertPath, let key = options.tlsKeyPath {
            info.options |= UInt64(LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT)
            let c = strdup(cert)!, k = strdup(key)!
            cStrings.append(c); cStrings.append(k)
            info.ssl_cert_filepath = UnsafePointer(c)
            info.ssl_private_key_filepath = UnsafePointer(k)
        }
        // permessage-deflate stays off: no extensions are offered (see LWS-NOTES: lws 4.1.6 aborts under it).
        info.extensions = nil

        guard let ctx = lws_create_context(&info) else {
            throw LWSServerError.contextFailed("libwebsockets refused \(options.host):\(options.port) (address in use or not available?)")
        }
        let vhost = lws_get_vhost_by_name(ctx, "default")
        boundPort = vhost.map { Int(lws_get_vhost_listen_port($0)) } ?? options.port

        let t = UnsafeMutablePointer<qg_timer_t>.allocate(capacity: 1)
        t.initialize(to: qg_timer_t())
        t.pointee.owner = Unmanaged.passUnretained(self).toOpaque()
        timer = t

        context = ctx
        lock.lock()
        sharedContext = ctx
        lock.unlock()
        executor.attach(ctx)
    }

    private func runLoop() {
        while true {
            lock.lock()
            let stop = stopping
            lock.unlock()
            if stop { break }
            if lws_service(context, 0) < 0 { break }
        }
        closeAllForShutdown()
        executor.detach()
        if let t = timer { lws_sul_cancel(&t.pointee.sul) }
        lock.lock()
        sharedContext = nil
        lock.unlock()
        lws_context_destroy(context)
        context = nil
        connections.removeAll()
    }

    /// Sends every WebSocket peer 1001 "going away" and serves until they are gone (at most ~1 s).
    private func closeAllForShutdown() {
        for c in connections.values where c.isWebSocket {
            close(c.id, code: CloseCode.goingAway, reason: "server shutting down")
        }
        var rounds = 0
        while connections.values.contains(where: { $0.isWebSocket }) && rounds < 20 {
            wake(afterMicroseconds: 50_000)
            if lws_service(context, 0) < 0 { break }
            rounds += 1
        }
    }

    /// Arms the single loop timer; a later call replaces an earlier one.
    public func wake(afterMicroseconds us: Int64) {
        guard let ctx = context, let t = timer else { return }
        lws_sul_schedule(ctx, 0, &t.pointee.sul, qgLWSTimerCallback, max(0, us))
    }

    func timerFired() { delegate?.timerFired() }

    // MARK: - Connections (service thread)

    func connection(_ wsi: OpaquePointer, _ user: UnsafeMutableRawPointer?, create: Bool) -> LWSConnection? {
        guard let user else { return nil }
        let slot = user.assumingMemoryBound(to: UInt64.self)
        if slot.pointee != 0, let c = connections[slot.pointee] { return c }
        guard create else { return nil }
        let c = LWSConnection(id: nextID, wsi: wsi)
        nextID += 1
        slot.pointee = c.id
        connections[c.id] = c
        return c
    }

    func forget(_ user: UnsafeMutableRawPointer?) -> LWSConnection? {
        guard let user else { return nil }
        let slot = user.assumingMemoryBound(to: UInt64.self)
        defer { slot.pointee = 0 }
        return connections.removeValue(forKey: slot.pointee)
    }
}
