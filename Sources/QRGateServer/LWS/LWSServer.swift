internal import CWebSockets
import QRGateCore
import Foundation
import Logging
import Synchronization

/// What the event loops call. Every method but `webSocketShouldAccept` runs on the first loop's thread
/// (`LWSServer.executor`), in the order things happened on each connection: calls from other loops are
/// posted to it.
public protocol LWSServerDelegate: AnyObject, Sendable {
    /// Answer now, or return nil and call `LWSServer.respond(_:_:)` later.
    func http(_ request: HTTPRequest, connection: ConnectionID) -> HTTPResponse?
    /// Accept a WebSocket handshake with nil, or refuse it with an HTTP status and a short reason.
    /// Runs on the thread of the loop that owns the connection (any loop): it may use only Sendable state.
    func webSocketShouldAccept(_ info: WebSocketInfo) -> (status: Int, reason: String)?
    func webSocketOpened(_ connection: ConnectionID, info: WebSocketInfo)
    func webSocketReceived(_ connection: ConnectionID, message: [UInt8], binary: Bool)
    func webSocketClosed(_ connection: ConnectionID)
    /// A frame sent with `notifyWhenWritten` has been handed to the kernel (flow control of long streams).
    func webSocketWritten(_ connection: ConnectionID)
    /// The timer armed with `LWSServer.wake(afterMicroseconds:)` fired.
    func timerFired()
}

/// Settings of the listening socket and its limits.
public struct LWSServerOptions: Sendable {
    public var host: String
    public var port: Int
    public var maxMessageBytes: Int
    public var maxBodyBytes: Int
    /// Unsent bytes one peer may have for `slowConsumerSeconds` before it is closed (4008).
    public var outboxBytes: Int
    public var slowConsumerSeconds: Double
    /// Idle WebSocket peers are pinged after this many seconds without a word, dropped after twice that.
    public var pingIntervalSeconds: Int
    /// lws's timeouts: a WebSocket handshake, an HTTP request's headers and body (a deferred answer has its own).
    public var handshakeTimeoutSeconds: Int
    public var tlsCertPath: String?
    public var tlsKeyPath: String?
    /// libwebsockets contexts, one thread each, all listening on `port`.
    public var loops: Int
    /// libev (epoll) or `poll(2)` (lws's own loop).
    public var eventLoop: EventLoopKind
    /// Headers every HTTP answer carries (the security headers).
    public var responseHeaders: [(String, String)] = []
    /// Origins whose cross-origin requests get `Access-Control-Allow-Origin` (CORS).
    public var corsOrigins: Set<String> = []

    public init(host: String, port: Int, maxMessageBytes: Int = 65536, maxBodyBytes: Int = 1 << 20,
                outboxBytes: Int = 4 << 20, slowConsumerSeconds: Double = 10, pingIntervalSeconds: Int = 30, handshakeTimeoutSeconds: Int = 10,
                tlsCertPath: String? = nil, tlsKeyPath: String? = nil, loops: Int = 1, eventLoop: EventLoopKind = .libev) {
        self.host = host; self.port = port; self.maxMessageBytes = maxMessageBytes; self.maxBodyBytes = maxBodyBytes
        self.outboxBytes = outboxBytes; self.slowConsumerSeconds = slowConsumerSeconds; self.pingIntervalSeconds = min(max(1, pingIntervalSeconds), 3600)
        self.handshakeTimeoutSeconds = max(1, handshakeTimeoutSeconds)
        self.tlsCertPath = tlsCertPath; self.tlsKeyPath = tlsKeyPath
        self.loops = max(1, loops)
        self.eventLoop = eventLoop
    }
}

public enum LWSServerError: Error, CustomStringConvertible {
    case contextFailed(String)
    public var description: String {
        switch self { case let .contextFailed(why): "could not start the server: \(why)" }
    }
}

/// The server: `options.loops` libwebsockets loops (`LWSLoop`) on one port, and the routing between them.
///
/// The first loop is the home of the delegate (its executor is `executor`): what any loop's peers do
/// reaches the delegate there, in order. What the delegate sends goes to the loop that owns the
/// connection — directly when that is the calling loop, else posted to it with the frame, which that
/// loop copies once for all its recipients (lws writes each frame's header into the buffer's head-room,
/// so two loops never share one buffer). HTTP is in `LWSServer+HTTP.swift`, WebSocket framing and the
/// outbox in `LWSServer+WebSocket.swift`, the C callback dispatch in `LWSCallbacks.swift`.
public final class LWSServer: Sendable {
    public let options: LWSServerOptions
    let logger: Logger
    let loops: [LWSLoop]
    private struct WeakDelegate { weak var value: (any LWSServerDelegate)? }
    private let delegateBox = Mutex(WeakDelegate())
    private let bound = Atomic<Int>(0)

    /// The first loop's executor: actors pinned here (the gateway) own the sessions and the timers.
    public var executor: LoopExecutor { loops[0].executor }

    public var delegate: (any LWSServerDelegate)? {
        get { delegateBox.withLock { $0.value } }
        set { delegateBox.withLock { $0.value = newValue } }
    }

    /// Frames dropped because a newer one with the same coalescing key replaced them (all loops).
    /// Bytes waiting in every peer's outbox, all loops.
    public var unsentBytes: Int { loops.reduce(0) { $0 + $1.unsentBytes.load(ordering: .relaxed) } }
    public var coalesced: Int { loops.reduce(0) { $0 + $1.coalesced.load(ordering: .relaxed) } }
    /// Peers closed for reading too slowly (all loops).
    public var slowConsumersClosed: Int { loops.reduce(0) { $0 + $1.slowConsumersClosed.load(ordering: .relaxed) } }
    /// WebSocket peers dropped for not answering keep-alive pings (all loops).
    public var idleDropped: Int { loops.reduce(0) { $0 + $1.idleDropped.load(ordering: .relaxed) } }
    /// Connections closed as soon as accepted because the process was at its open-files limit.
    public var shedAtFileLimit: Int { loops.reduce(0) { $0 + $1.shedAtFileLimit.load(ordering: .relaxed) } }
    /// Connections each loop accepted so far.
    public var acceptedPerLoop: [Int] { loops.map { $0.accepted.load(ordering: .relaxed) } }

    /// The port actually bound (meaningful once `start()` returned).
    public var boundPort: Int { bound.load(ordering: .relaxed) }

    /// Largest piece lws hands the kernel in one `send`. Kept apart from the 1 KiB receive buffer, so a
    /// frame leaves whole when the kernel takes it (0 would mean "the receive buffer's size": an 11.8 KB
    /// QR frame in twelve writes, each waiting for its own WRITEABLE turn).
    static let txPacketSize = 65536

    public init(options: LWSServerOptions, logger: Logger) {
        self.options = options
        self.logger = logger
        loops = (0..<options.loops).map { LWSLoop(index: $0, options: options) }
        for l in loops { l.server = self }
    }

    // MARK: - Life cycle (any thread)

    /// Starts every loop listening on the port (the first one picks it when `options.port` is 0) and
    /// returns once all serve.
    @discardableResult
    public func start() throws -> Int {
        LWSLog.install(logger)
        var port = options.port
        if port != 0 {
            // SO_REUSEPORT would let this process share a port another one listens on: refuse instead.
            let host = options.host == "localhost" ? "127.0.0.1" : options.host
            if qg_port_in_use(host, Int32(port)) == 1 {
                throw LWSServerError.contextFailed("cannot listen on \(options.host):\(port): address already in use")
            }
        }
        for (i, loop) in loops.enumerated() {
            do {
                port = try loop.start(port: port)
            } catch {
                for started in loops[..<i] { started.requestStop() }
                for started in loops[..<i] { started.waitUntilStopped() }
                throw error
            }
        }
        bound.store(port, ordering: .relaxed)
        let waits = options.eventLoop == .poll ? "poll" : loops.allSatisfy(\.usesEpoll) ? "libev (epoll)" : "libev"
        logger.info("\(loops.count) libwebsockets loop\(loops.count == 1 ? "" : "s") on port \(port), waiting with \(waits)")
        return port
    }

    /// Asks every loop to close its connections and end; waits until they have.
    public func stop() {
        for l in loops { l.requestStop() }
        waitUntilStopped()
    }

    /// Blocks until every loop has ended (after `stop()`).
    public func waitUntilStopped() {
        for l in loops { l.waitUntilStopped() }
    }

    /// Arms the first loop's timer (call it there); a later call replaces an earlier one.
    public func wake(afterMicroseconds us: Int64) { loops[0].wake(afterMicroseconds: us) }

    func timerFired(on loop: LWSLoop) {
        guard loop.index == 0 else { return }
        delegate?.timerFired()
    }

    // MARK: - Routing

    /// Which loop owns a connection (0 for the first).
    public func loopIndex(of id: ConnectionID) -> Int { LWSLoop.loopIndex(of: id) }

    /// The loop that owns a connection.
    func loop(of id: ConnectionID) -> LWSLoop? {
        let i = LWSLoop.loopIndex(of: id)
        return i < loops.count ? loops[i] : nil
    }

    /// Runs `work` on `loop`: now when called on its thread, else posted there in order.
    func on(_ loop: LWSLoop, _ work: @escaping @Sendable (LWSLoop, _ local: Bool) -> Void) {
        if loop.executor.isLoopThread { work(loop, true) } else { loop.executor.post { work(loop, false) } }
    }

    /// Hands something a loop's peer did to the delegate, on the first loop, in order.
    func toDelegate(from loop: LWSLoop, _ call: @escaping @Sendable (any LWSServerDelegate) -> Void) {
        guard let d = delegate else { return }
        if loop.index == 0 { call(d) } else { loops[0].executor.post { call(d) } }
    }

    /// The same, but always as a job of the first loop's executor (never inside the caller's call).
    func toDelegateLater(from loop: LWSLoop, _ call: @escaping @Sendable (any LWSServerDelegate) -> Void) {
        guard let d = delegate else { return }
        loops[0].executor.post { call(d) }
    }
}
