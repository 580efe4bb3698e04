private import CWebSockets
import Foundation
import Logging
import QRGateCore

/// What the event loop calls. Every method runs on the service thread.
public protocol LWSServerDelegate: AnyObject {
    /// Answer now, or return nil and call `LWSServer.respond(_:_:)` later.
    func http(_ request: HTTPRequest, connection: ConnectionID) -> HTTPResponse?
    /// Accept a WebSocket handshake with nil, or refuse it with an HTTP status and a short reason.
    func webSocketShouldAccept(_ info: WebSocketInfo) -> (status: Int, reason: String)?
    func webSocketOpened(_ connection: ConnectionID, info: WebSocketInfo)
    func webSocketReceived(_ connection: ConnectionID, message: [UInt8], binary: Bool)
    func webSocketClosed(_ connection: ConnectionID)
    /// The timer armed with `LWSServer.wake(after:)` fired.
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

/// The libwebsockets context and its single service thread.
///
/// Thread rule: only `post(_:)`, `stop()` and `start()` may be called from other threads;
/// everything else runs on the service thread (inside delegate calls or posted work).
public final class LWSServer: @unchecked Sendable {
    public let options: LWSServerOptions
    public weak var delegate: LWSServerDelegate?
    let logger: Logger

    // Loop-confined state.
    private var context: OpaquePointer?
    private var connections: [ConnectionID: Connection] = [:]
    private var nextID: ConnectionID = 1
    private var timer: UnsafeMutablePointer<qg_timer_t>?
    private var protocols: UnsafeMutablePointer<lws_protocols>?
    private var cStrings: [UnsafeMutablePointer<CChar>] = []
    private var retryPolicy: UnsafeMutablePointer<lws_retry_bo_t>?

    // Shared with other threads, under `lock`.
    private let lock = NSLock()
    private var inbox: [@Sendable () -> Void] = []
    private var stopping = false
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    /// Frames dropped because a newer one with the same coalescing key replaced them.
    public private(set) var coalesced = 0
    /// Peers closed for reading too slowly.
    public private(set) var slowConsumersClosed = 0

    /// The port actually bound (meaningful once `start()` returned).
    public private(set) var boundPort: Int = 0

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
        nonisolated(unsafe) var failure: Error?
        let t = Thread { [self] in
            do { try createContext() } catch { failure = error }
            ready.signal()
            if failure == nil { runLoop() }
            finished.signal()
        }
        t.name = "qrgate-lws"
        t.stackSize = 1 << 22
        thread = t
        t.start()
        ready.wait()
        if let failure { throw failure }
        return boundPort
    }

    /// Runs `work` on the service thread soon. Safe from any thread.
    public func post(_ work: @escaping @Sendable () -> Void) {
        lock.lock()
        inbox.append(work)
        let ctx = context
        lock.unlock()
        if let ctx { lws_cancel_service(ctx) }
    }

    /// Asks the loop to close every connection and end; waits until it has.
    public func stop() {
        lock.lock()
        let already = stopping
        stopping = true
        let ctx = context
        lock.unlock()
        if let ctx { lws_cancel_service(ctx) }
        if !already { waitUntilStopped() }
    }

    /// Blocks until the service loop has ended (after `stop()`). Any number of threads may wait:
    /// each waiter passes the signal on to the next.
    public func waitUntilStopped() {
        guard thread != nil else { return }
        finished.wait()
        finished.signal()
    }

    // MARK: - Loop

    private func createContext() throws {
        let pre = Int(qg_lws_pre())
        precondition(pre > 0)
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

        lock.lock()
        context = ctx
        lock.unlock()
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
        if let t = timer { lws_sul_cancel(&t.pointee.sul) }
        lock.lock()
        let ctx = context
        context = nil
        lock.unlock()
        lws_context_destroy(ctx)
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

    fileprivate func timerFired() { delegate?.timerFired() }

    fileprivate func drainInbox() {
        lock.lock()
        let work = inbox
        inbox.removeAll(keepingCapacity: true)
        lock.unlock()
        for w in work { w() }
    }

    // MARK: - Connections (service thread)

    final class Connection {
        let id: ConnectionID
        let wsi: OpaquePointer
        var isWebSocket = false
        // HTTP
        var request: HTTPRequest?
        var pendingBody: [UInt8] = []
        var bodyOffset = 0
        var bodyTooLarge = false
        var responding = false
        // WebSocket
        var rx: [UInt8] = []
        var rxOversize = false
        var outbox: [WireFrame] = []
        var outboxKeys: [String?] = []
        var closeCode: Int32 = 0
        var closeReason = ""

        init(id: ConnectionID, wsi: OpaquePointer) { self.id = id; self.wsi = wsi }
    }

    fileprivate func connection(_ wsi: OpaquePointer, _ user: UnsafeMutableRawPointer?, create: Bool) -> Connection? {
        guard let user else { return nil }
        let slot = user.assumingMemoryBound(to: UInt64.self)
        if slot.pointee != 0, let c = connections[slot.pointee] { return c }
        guard create else { return nil }
        let c = Connection(id: nextID, wsi: wsi)
        nextID += 1
        slot.pointee = c.id
        connections[c.id] = c
        return c
    }

    fileprivate func forget(_ user: UnsafeMutableRawPointer?) -> Connection? {
        guard let user else { return nil }
        let slot = user.assumingMemoryBound(to: UInt64.self)
        defer { slot.pointee = 0 }
        return connections.removeValue(forKey: slot.pointee)
    }

    /// Queues a text frame. With a `coalesceKey`, an unsent frame with the same key is replaced
    /// (only the newest matters). Returns false when the outbox is full and the peer was closed.
    @discardableResult
    public func send(_ frame: WireFrame, to id: ConnectionID, coalesceKey: String? = nil) -> Bool {
        guard let c = connections[id], c.isWebSocket, c.closeCode == 0 else { return false }
        if let key = coalesceKey, let i = c.outboxKeys.firstIndex(of: key) {
            // The older unsent frame is dropped and the new one queued last, so seq order holds.
            c.outbox.remove(at: i)
            c.outboxKeys.remove(at: i)
            coalesced += 1
        }
        if c.outbox.count >= options.outboxLimit {
            slowConsumersClosed += 1
            close(id, code: CloseCode.slowConsumer, reason: "slow consumer: outbox over \(options.outboxLimit) frames")
            return false
        }
        c.outbox.append(frame)
        c.outboxKeys.append(coalesceKey)
        lws_callback_on_writable(c.wsi)
        return true
    }

    /// Closes a WebSocket with a code and a short reason (sent once pending frames are out of the way).
    public func close(_ id: ConnectionID, code: Int, reason: String) {
        guard let c = connections[id], c.closeCode == 0 else { return }
        c.closeCode = Int32(code)
        c.closeReason = String(reason.utf8.prefix(120)) ?? ""
        c.outbox.removeAll()
        c.outboxKeys.removeAll()
        lws_callback_on_writable(c.wsi)
    }

    /// Finishes a deferred HTTP response.
    public func respond(_ id: ConnectionID, _ response: HTTPResponse) {
        guard let c = connections[id], !c.isWebSocket else { return }
        if startResponse(c, response) != 0 {
            lws_set_timeout(c.wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC)
        }
    }

    // MARK: - Callback dispatch

    fileprivate func handle(_ wsi: OpaquePointer, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
                            _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        switch reason {
        case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
            drainInbox()
            return 0
        case LWS_CALLBACK_HTTP:
            guard let c = connection(wsi, user, create: true) else { return -1 }
            return beginHTTP(c, path: input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "/")
        case LWS_CALLBACK_HTTP_BODY:
            guard let c = connection(wsi, user, create: false), c.request != nil else { return 0 }
            if c.request!.body.count + len > options.maxBodyBytes { c.bodyTooLarge = true; return 0 }
            if let input, len > 0 { c.request!.body.append(contentsOf: UnsafeRawBufferPointer(start: input, count: len)) }
            return 0
        case LWS_CALLBACK_HTTP_BODY_COMPLETION:
            guard let c = connection(wsi, user, create: false), let req = c.request else { return 0 }
            if c.bodyTooLarge {
                return startResponse(c, .error(413, "request body over \(options.maxBodyBytes) bytes"))
            }
            return dispatchHTTP(c, req)
        case LWS_CALLBACK_HTTP_WRITEABLE:
            guard let c = connection(wsi, user, create: false) else { return 0 }
            return writeBody(c)
        case LWS_CALLBACK_HTTP_FILE_COMPLETION:
            guard let c = connection(wsi, user, create: false) else { return 0 }
            c.request = nil
            c.responding = false
            return lws_http_transaction_completed(wsi) != 0 ? -1 : 0
        case LWS_CALLBACK_CLOSED_HTTP:
            _ = forget(user)
            return 0
        case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
            // The headers are still bound here, so a refusal can be a real HTTP answer clients can read.
            guard let delegate else { return -1 }
            guard let refusal = delegate.webSocketShouldAccept(webSocketInfo(wsi)) else { return 0 }
            if lws_return_http_status(wsi, UInt32(refusal.status), refusal.reason) != 0 { return -1 }
            return 1
        case LWS_CALLBACK_ESTABLISHED:
            guard let c = connection(wsi, user, create: true) else { return -1 }
            c.isWebSocket = true
            delegate?.webSocketOpened(c.id, info: webSocketInfo(wsi))
            return 0
        case LWS_CALLBACK_RECEIVE:
            guard let c = connection(wsi, user, create: false) else { return -1 }
            return receive(c, input, len)
        case LWS_CALLBACK_SERVER_WRITEABLE:
            guard let c = connection(wsi, user, create: false) else { return 0 }
            return writeFrame(c)
        case LWS_CALLBACK_CLOSED:
            if let c = forget(user) { delegate?.webSocketClosed(c.id) }
            return 0
        default:
            return lws_callback_http_dummy(wsi, reason, user, input, len)
        }
    }

    // MARK: HTTP

    private func beginHTTP(_ c: Connection, path: String) -> Int32 {
        let wsi = c.wsi
        let method: HTTPRequest.Method
        if lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0 { method = .post }
        else if lws_hdr_total_length(wsi, WSI_TOKEN_PUT_URI) > 0 { method = .put }
        else if lws_hdr_total_length(wsi, WSI_TOKEN_DELETE_URI) > 0 { method = .delete }
        else if lws_hdr_total_length(wsi, WSI_TOKEN_PATCH_URI) > 0 { method = .patch }
        else if lws_hdr_total_length(wsi, WSI_TOKEN_OPTIONS_URI) > 0 { method = .options }
        else if lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI) > 0 { method = .head }
        else { method = .get }
        var headers: [String: String] = [:]
        headers["authorization"] = header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION)
        headers["origin"] = header(wsi, WSI_TOKEN_ORIGIN)
        headers["content-type"] = header(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE)
        headers["apikey"] = customHeader(wsi, "apikey:")
        let req = HTTPRequest(method: method, path: path, query: queryArgs(wsi), headers: headers, peer: peer(wsi))
        c.request = req
        c.bodyTooLarge = false
        if let cl = header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH), let n = Int(cl), n > options.maxBodyBytes {
            return startResponse(c, .error(413, "request body over \(options.maxBodyBytes) bytes"))
        }
        if method == .post || method == .put || method == .patch || method == .delete,
           lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 || lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0 {
            return 0 // wait for LWS_CALLBACK_HTTP_BODY_COMPLETION
        }
        return dispatchHTTP(c, req)
    }

    private func dispatchHTTP(_ c: Connection, _ req: HTTPRequest) -> Int32 {
        guard let response = delegate?.http(req, connection: c.id) else { return 0 } // deferred
        return startResponse(c, response)
    }

    private func startResponse(_ c: Connection, _ response: HTTPResponse) -> Int32 {
        guard !c.responding else { return 0 }
        c.responding = true
        let wsi = c.wsi
        var extra = [UInt8](repeating: 0, count: 2048)
        let status = UInt32(response.status)
        switch response.body {
        case let .file(path):
            let mime = lws_get_mimetype(path, nil).map { String(cString: $0) } ?? "application/octet-stream"
            let n = extra.withUnsafeMutableBufferPointer { buf -> Int in
                let start = buf.baseAddress!
                var p: UnsafeMutablePointer<UInt8>? = start
                let end = start + buf.count - 1
                for (name, value) in response.headers {
                    _ = lws_add_http_header_by_name(wsi, name.lowercased() + ":", value, Int32(value.utf8.count), &p, end)
                }
                return p! - start
            }
            let r = extra.withUnsafeBufferPointer { buf in
                lws_serve_http_file(wsi, path, mime, n > 0 ? UnsafeRawPointer(buf.baseAddress!).assumingMemoryBound(to: CChar.self) : nil, Int32(n))
            }
            if r < 0 { return -1 }
            if r > 0 { return lws_http_transaction_completed(wsi) != 0 ? -1 : 0 }
            return 0
        case let .bytes(body):
            let pre = Int(qg_lws_pre())
            var head = [UInt8](repeating: 0, count: pre + 4096)
            let ok = head.withUnsafeMutableBufferPointer { buf -> Bool in
                let start = buf.baseAddress! + pre
                var p: UnsafeMutablePointer<UInt8>? = start
                let end = buf.baseAddress! + buf.count - 1
                if lws_add_http_common_headers(wsi, status, response.contentType, lws_filepos_t(body.count), &p, end) != 0 { return false }
                for (name, value) in response.headers {
                    if lws_add_http_header_by_name(wsi, name.lowercased() + ":", value, Int32(value.utf8.count), &p, end) != 0 { return false }
                }
                return lws_finalize_write_http_header(wsi, start, &p, end) == 0
            }
            guard ok else { return -1 }
            c.pendingBody = body
            c.bodyOffset = 0
            if body.isEmpty || c.request?.method == .head { return finishHTTP(c) }
            lws_callback_on_writable(wsi)
            return 0
        }
    }

    private func writeBody(_ c: Connection) -> Int32 {
        guard c.responding, c.bodyOffset < c.pendingBody.count else { return 0 }
        let pre = Int(qg_lws_pre())
        let chunk = min(16384, c.pendingBody.count - c.bodyOffset)
        let last = c.bodyOffset + chunk == c.pendingBody.count
        var buf = [UInt8](repeating: 0, count: pre + chunk)
        buf.replaceSubrange(pre..<(pre + chunk), with: c.pendingBody[c.bodyOffset..<(c.bodyOffset + chunk)])
        let written = buf.withUnsafeMutableBufferPointer { b in
            lws_write(c.wsi, b.baseAddress! + pre, chunk, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP)
        }
        if written < 0 { return -1 }
        c.bodyOffset += chunk
        if last { return finishHTTP(c) }
        lws_callback_on_writable(c.wsi)
        return 0
    }

    private func finishHTTP(_ c: Connection) -> Int32 {
        c.pendingBody = []
        c.bodyOffset = 0
        c.request = nil
        c.responding = false
        return lws_http_transaction_completed(c.wsi) != 0 ? -1 : 0
    }

    // MARK: WebSocket

    private func receive(_ c: Connection, _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        if c.closeCode != 0 { return 0 }
        if c.rx.count + len > options.maxMessageBytes {
            c.rx = []
            c.rxOversize = true
        }
        if !c.rxOversize, let input, len > 0 {
            c.rx.append(contentsOf: UnsafeRawBufferPointer(start: input, count: len))
        }
        guard lws_is_final_fragment(c.wsi) != 0, lws_remaining_packet_payload(c.wsi) == 0 else { return 0 }
        if c.rxOversize {
            c.rxOversize = false
            let reason = "message over \(options.maxMessageBytes) bytes"
            var bytes = Array(reason.utf8)
            lws_close_reason(c.wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, &bytes, bytes.count)
            return -1
        }
        let message = c.rx
        c.rx = []
        delegate?.webSocketReceived(c.id, message: message, binary: lws_frame_is_binary(c.wsi) != 0)
        return 0
    }

    private func writeFrame(_ c: Connection) -> Int32 {
        if c.closeCode != 0 {
            var bytes = Array(c.closeReason.utf8)
            lws_close_reason(c.wsi, lws_close_status(rawValue: UInt32(c.closeCode)), &bytes, bytes.count)
            return -1
        }
        guard !c.outbox.isEmpty else { return 0 }
        let frame = c.outbox.removeFirst()
        c.outboxKeys.removeFirst()
        if frame.write(to: c.wsi) < 0 { return -1 }
        if !c.outbox.isEmpty { lws_callback_on_writable(c.wsi) }
        return 0
    }

    // MARK: Header helpers

    private func webSocketInfo(_ wsi: OpaquePointer) -> WebSocketInfo {
        WebSocketInfo(path: header(wsi, WSI_TOKEN_GET_URI) ?? "/", query: queryArgs(wsi),
                      origin: header(wsi, WSI_TOKEN_ORIGIN), authorization: header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION),
                      subprotocol: header(wsi, WSI_TOKEN_PROTOCOL), peer: peer(wsi))
    }

    private func header(_ wsi: OpaquePointer, _ token: lws_token_indexes) -> String? {
        let n = Int(lws_hdr_total_length(wsi, token))
        guard n > 0 else { return nil }
        var buf = [CChar](repeating: 0, count: n + 1)
        guard lws_hdr_copy(wsi, &buf, Int32(n + 1), token) >= 0 else { return nil }
        return String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func customHeader(_ wsi: OpaquePointer, _ name: String) -> String? {
        let n = Int(lws_hdr_custom_length(wsi, name, Int32(name.utf8.count)))
        guard n > 0 else { return nil }
        var buf = [CChar](repeating: 0, count: n + 1)
        guard lws_hdr_custom_copy(wsi, &buf, Int32(n + 1), name, Int32(name.utf8.count)) >= 0 else { return nil }
        return String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func queryArgs(_ wsi: OpaquePointer) -> [String: String] {
        var out: [String: String] = [:]
        var idx: Int32 = 0
        var buf = [CChar](repeating: 0, count: 4096)
        while true {
            let n = lws_hdr_copy_fragment(wsi, &buf, Int32(buf.count), WSI_TOKEN_HTTP_URI_ARGS, idx)
            if n < 0 { break }
            idx += 1
            let s = String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let eq = s.firstIndex(of: "=") {
                let k = String(s[..<eq]), v = String(s[s.index(after: eq)...])
                if out[k] == nil { out[k] = v }
            } else if !s.isEmpty, out[s] == nil {
                out[s] = ""
            }
            if idx > 64 { break }
        }
        return out
    }

    private func peer(_ wsi: OpaquePointer) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        guard lws_get_peer_simple(wsi, &buf, buf.count) != nil else { return "" }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

// MARK: - C entry points (non-capturing, nonisolated)

private func qgLWSCallback(_ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
                           _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
    guard let wsi, let ctx = lws_get_context(wsi), let raw = lws_context_user(ctx) else {
        return lws_callback_http_dummy(wsi, reason, user, input, len)
    }
    let server = Unmanaged<LWSServer>.fromOpaque(raw).takeUnretainedValue()
    return server.handle(wsi, reason, user, input, len)
}

private func qgLWSTimerCallback(_ sul: UnsafeMutablePointer<lws_sorted_usec_list_t>?) {
    guard let sul, let raw = qg_timer_owner(sul) else { return }
    Unmanaged<LWSServer>.fromOpaque(raw).takeUnretainedValue().timerFired()
}
