private import CWebSockets
import Foundation

/// What a client pool reports. Every method runs on the pool's service thread.
protocol LWSClientPoolDelegate: AnyObject {
    func clientOpened(_ id: Int)
    func clientReceived(_ id: Int, message: [UInt8])
    func clientFailed(_ id: Int, reason: String)
    func clientClosed(_ id: Int)
}

/// Many WebSocket client connections on one libwebsockets context and one thread (the load
/// generator's engine), waiting on libev (epoll) like the gateway: lws's own loop polls every
/// descriptor on every turn, which at 10 000 connections cost the load generator most of a core and
/// delayed its receipts (it measures latency at receipt). Other threads only call `post`, `connect`
/// and `stop`.
final class LWSClientPool: @unchecked Sendable {
    weak var delegate: LWSClientPoolDelegate?
    private var context: OpaquePointer?
    /// The libev loop lws runs on (service thread only once started); nil on lws's poll loop.
    private var evLoop: UnsafeMutableRawPointer?
    /// Whether to wait with libev (epoll) rather than lws's own poll loop.
    let usesLibev: Bool
    private var protocols: UnsafeMutablePointer<lws_protocols>?
    private var cStrings: [UnsafeMutablePointer<CChar>] = []
    private var clients: [Int: (wsi: OpaquePointer?, outbox: [[UInt8]], rx: [UInt8])] = [:]
    private let lock = NSLock()
    private var inbox: [@Sendable () -> Void] = []
    private var stopping = false
    private let finished = DispatchSemaphore(value: 0)

    init(libev: Bool = true) { usesLibev = libev }

    deinit {
        protocols?.deallocate()
        cStrings.forEach { free($0) }
    }

    /// Starts the context (no listening socket) and its thread.
    func start() throws {
        lws_set_log_level(LLL_ERR, nil)
        let ready = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var failed = false
        let t = Thread { [self] in
            let name = strdup("qrgate-bench")!
            cStrings.append(name)
            let protos = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 2)
            protos.initialize(repeating: lws_protocols(), count: 2)
            protos[0].name = UnsafePointer(name)
            protos[0].callback = qgLWSClientCallback
            protos[0].per_session_data_size = MemoryLayout<Int>.size
            // Whole messages per callback instead of ~1 KiB pieces: the load generator's CPU goes to sockets.
            protos[0].rx_buffer_size = 65536
            protocols = protos
            var info = lws_context_creation_info()
            info.port = CONTEXT_PORT_NO_LISTEN
            info.protocols = UnsafePointer(protos)
            info.user = Unmanaged.passUnretained(self).toOpaque()
            info.timeout_secs = 30
            var foreign: [UnsafeMutableRawPointer?] = [nil]
            if usesLibev {
                evLoop = qg_ev_loop_new()
                foreign[0] = evLoop
                info.options |= UInt64(LWS_SERVER_OPTION_LIBEV)
            }
            // No libev loop when one was asked for: a failure, not a quiet fall-back to the poll loop.
            let ctx = usesLibev && evLoop == nil ? nil : foreign.withUnsafeMutableBufferPointer { loops -> OpaquePointer? in
                // lws reads foreign_loops only while it creates the context.
                if evLoop != nil { info.foreign_loops = loops.baseAddress }
                return lws_create_context(&info)
            }
            lock.lock(); context = ctx; lock.unlock()
            failed = ctx == nil
            ready.signal()
            guard ctx != nil else {
                if let ev = evLoop { qg_ev_loop_destroy(ev); evLoop = nil }
                finished.signal()
                return
            }
            if let ev = evLoop {
                // Returns once the EVENT_WAIT_CANCELLED callback sees the stop request and breaks the loop.
                lock.lock(); let stop = stopping; lock.unlock()
                if !stop { qg_ev_run(ev) }
            } else {
                while true {
                    lock.lock(); let stop = stopping; lock.unlock()
                    if stop { break }
                    if lws_service(ctx, 0) < 0 { break }
                }
            }
            lws_context_destroy(ctx)
            if let ev = evLoop { qg_ev_loop_destroy(ev); evLoop = nil }
            finished.signal()
        }
        t.name = "qrgate-bench-lws"
        t.start()
        ready.wait()
        if failed { throw LWSClientPoolError.contextFailed }
    }

    func post(_ work: @escaping @Sendable () -> Void) {
        lock.lock()
        inbox.append(work)
        let ctx = context
        lock.unlock()
        if let ctx { lws_cancel_service(ctx) }
    }

    func stop() {
        lock.lock(); stopping = true; let ctx = context; lock.unlock()
        if let ctx { lws_cancel_service(ctx) }
        finished.wait()
    }

    /// Opens client `id` to ws://host:port/path (service thread only: call from `post`).
    func connect(_ id: Int, host: String, port: Int, path: String) {
        guard let ctx = context else { return }
        let h = strdup(host)!, p = strdup(path)!
        defer { free(h); free(p) }
        var info = lws_client_connect_info()
        info.context = ctx
        info.address = UnsafePointer(h)
        info.port = Int32(port)
        info.path = UnsafePointer(p)
        info.host = UnsafePointer(h)
        info.origin = UnsafePointer(h)
        info.local_protocol_name = UnsafePointer(cStrings[0])
        clients[id] = (nil, [], [])
        let slot = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        slot.pointee = id
        info.opaque_user_data = UnsafeMutableRawPointer(slot)
        if lws_client_connect_via_info(&info) == nil {
            slot.deallocate()
            clients[id] = nil
            delegate?.clientFailed(id, reason: "connect refused by lws")
        }
    }

    /// Queues a text message for client `id` (service thread only).
    func send(_ id: Int, _ text: [UInt8]) {
        guard var c = clients[id], let wsi = c.wsi else { return }
        c.outbox.append(text)
        clients[id] = c
        lws_callback_on_writable(wsi)
    }

    fileprivate func handle(_ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        if reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED {
            lock.lock(); let work = inbox; inbox.removeAll(); let stop = stopping; lock.unlock()
            work.forEach { $0() }
            if stop, let ev = evLoop { qg_ev_break(ev) }
            return 0
        }
        guard let wsi, let raw = lws_get_opaque_user_data(wsi) else { return 0 }
        let slot = raw.assumingMemoryBound(to: Int.self)
        let id = slot.pointee
        switch reason {
        case LWS_CALLBACK_CLIENT_ESTABLISHED:
            clients[id]?.wsi = wsi
            delegate?.clientOpened(id)
        case LWS_CALLBACK_CLIENT_RECEIVE:
            if let input, len > 0 { clients[id]?.rx.append(contentsOf: UnsafeRawBufferPointer(start: input, count: len)) }
            if lws_is_final_fragment(wsi) != 0 && lws_remaining_packet_payload(wsi) == 0 {
                let m = clients[id]?.rx ?? []
                clients[id]?.rx = []
                delegate?.clientReceived(id, message: m)
            }
        case LWS_CALLBACK_CLIENT_WRITEABLE:
            guard var c = clients[id], !c.outbox.isEmpty else { return 0 }
            let payload = c.outbox.removeFirst()
            clients[id] = c
            if Self.writeText(payload, to: wsi) < 0 { return -1 }
            if !c.outbox.isEmpty { lws_callback_on_writable(wsi) }
        case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
            let why = input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "connection error"
            clients[id] = nil
            lws_set_opaque_user_data(wsi, nil)
            slot.deallocate()
            delegate?.clientFailed(id, reason: why)
        case LWS_CALLBACK_CLIENT_CLOSED:
            clients[id] = nil
            lws_set_opaque_user_data(wsi, nil)
            slot.deallocate()
            delegate?.clientClosed(id)
        default:
            break
        }
        return 0
    }
}

extension LWSClientPool {
    /// One text message with lws's LWS_PRE head-room in front (lws writes the header there).
    fileprivate static func writeText(_ payload: [UInt8], to wsi: OpaquePointer) -> Int32 {
        let pre = Int(qg_lws_pre())
        var buf = [UInt8](repeating: 0, count: pre + payload.count)
        buf.replaceSubrange(pre..<(pre + payload.count), with: payload)
        return buf.withUnsafeMutableBufferPointer { b in lws_write(wsi, b.baseAddress! + pre, payload.count, LWS_WRITE_TEXT) }
    }
}

private func qgLWSClientCallback(_ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
                                 _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
    guard let wsi, let ctx = lws_get_context(wsi), let raw = lws_context_user(ctx) else { return 0 }
    return Unmanaged<LWSClientPool>.fromOpaque(raw).takeUnretainedValue().handle(wsi, reason, input, len)
}

enum LWSClientPoolError: Error, CustomStringConvertible {
    case contextFailed
    var description: String { "libwebsockets could not create the client context" }
}
