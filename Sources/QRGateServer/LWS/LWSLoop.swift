internal import CWebSockets
import QRGateCore
import Foundation
import Synchronization

/// One libwebsockets context on its own thread, with its own listening socket on the server's port
/// (SO_REUSEPORT: the kernel spreads new connections over the loops) and the connections it accepted.
///
/// A thin wrapper of the C context. `@unchecked Sendable` because lws's own rule is the guard: the
/// connection table and the C objects are touched only on this loop's thread (inside lws callbacks or
/// calls run by `executor`, which `LoopExecutor.checkIsolated` asserts); the cross-thread entry points
/// (`stop()`, the executor's queue) go through `lock` and `lws_cancel_service`, the counters are atomics.
final class LWSLoop: @unchecked Sendable {
    let index: Int
    let options: LWSServerOptions
    /// Set once by the server that made it, before the loop starts.
    weak var server: LWSServer?
    /// Runs Swift jobs and posted calls on this loop's thread.
    let executor = LoopExecutor()

    // Service thread only.
    var context: OpaquePointer?
    private var vhost: OpaquePointer?
    var connections: [ConnectionID: LWSConnection] = [:]
    private var nextSerial: UInt64 = 1
    /// This loop's wake-up timer on lws's own poll loop: a timerfd watched as a raw file (see `wake`).
    private var timerFD: Int32 = -1
    private var protocols: UnsafeMutablePointer<lws_protocols>?
    private var cStrings: [UnsafeMutablePointer<CChar>] = []
    private var retryPolicy: UnsafeMutablePointer<lws_retry_bo_t>?
    /// The libev loop lws runs on (eventLoop = libev); nil with lws's own poll loop.
    private var evLoop: UnsafeMutableRawPointer?
    /// This loop's wake-up timer on libev (see `wake`).
    private var evTimer: UnsafeMutablePointer<qg_ev_timer_t>?
    /// When (lws_now_usecs) the server asked to be woken (`wake`), and when housekeeping is next due.
    private var requestedAt: Int64?
    private var housekeepingAt: Int64 = .max

    // Shared with other threads, under `lock`.
    private let lock = NSLock()
    private var stopping = false
    private var sharedContext: OpaquePointer?
    private var startFailure: Error?
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    /// Frames dropped because a newer one with the same coalescing key replaced them.
    let coalesced = Atomic<Int>(0)
    /// Bytes queued for this loop's peers and not yet handed to the kernel (all outboxes).
    let unsentBytes = Atomic<Int>(0)
    /// Peers closed for reading too slowly.
    let slowConsumersClosed = Atomic<Int>(0)
    /// Connections accepted from this loop's listening socket.
    let accepted = Atomic<Int>(0)
    /// WebSocket peers dropped for not answering a keep-alive ping.
    let idleDropped = Atomic<Int>(0)
    /// Connections closed as soon as taken because the process was at its open-files limit (`shed`).
    let shedAtFileLimit = Atomic<Int>(0)
    /// The descriptor the process keeps in reserve for `shed`, and the lock every accept takes: while one loop has
    /// given the spare up to take connections past the open-files limit, no other loop's accept can take the
    /// number it freed (which left that loop with no spare, spinning: seen in the e2e test before the lock).
    /// Opened by the first loop that starts, kept for the life of the process.
    private static let spare = Mutex<Int32>(-1)
    /// Service thread only: the listening socket's wsi while it is not watched (`shed` found no descriptor to
    /// take connections with), and what this loop last said about shedding (at most every 10 s).
    private var pausedListener: OpaquePointer?
    private var shedReported = 0
    private var shedReportedAt: Int64 = 0
    /// Connections one `shed` closes at most: under a flood the rest wait for the next readiness, and the
    /// loop (and the accept lock) are not held by it.
    private static let maxShedAtOnce = 1024

    /// Connection ids carry their loop in the bits above `serialBits`, so any thread can route to it.
    static let serialBits: UInt64 = 40
    static func loopIndex(of id: ConnectionID) -> Int { Int(id >> serialBits) }

    init(index: Int, options: LWSServerOptions) {
        self.index = index
        self.options = options
    }

    deinit {
        protocols?.deallocate()
        retryPolicy?.deallocate()
        evTimer?.deallocate()
        cStrings.forEach { free($0) }
    }

    // MARK: - Life cycle (any thread)

    /// Opens this loop's listening socket on `port` (0: an ephemeral one) and starts its thread;
    /// returns the bound port once the context serves.
    func start(port: Int) throws -> Int {
        var bound: Int32 = 0
        let host = options.host == "localhost" ? "127.0.0.1" : options.host
        let fd = qg_listen_reuseport(host, Int32(port), 1024, &bound)
        guard fd >= 0 else {
            throw LWSServerError.contextFailed("cannot listen on \(options.host):\(port): \(String(cString: strerror(-fd)))")
        }
        let ready = DispatchSemaphore(value: 0)
        let t = Thread { [self] in
            var failed = false
            do { try createContext(listener: fd) } catch {
                failed = true
                lock.lock(); startFailure = error; lock.unlock()
            }
            ready.signal()
            if !failed { runLoop() }
            finished.signal()
        }
        t.name = "qrgate-lws-\(index)"
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
        return Int(bound)
    }

    /// Asks the loop to close every connection and end.
    func requestStop() {
        lock.lock()
        stopping = true
        let ctx = sharedContext
        lock.unlock()
        if let ctx { lws_cancel_service(ctx) }
    }

    /// Blocks until the service loop has ended. Any number of threads may wait: each waiter passes the
    /// signal on to the next.
    func waitUntilStopped() {
        lock.lock()
        let started = thread != nil
        lock.unlock()
        guard started else { return }
        finished.wait()
        finished.signal()
    }

    // MARK: - Loop (service thread)

    private func createContext(listener fd: Int32) throws {
        precondition(qg_lws_pre() > 0)
        let name = strdup("qrgate.v1")!, accept = strdup("qrgate-internal-accept")!
        cStrings += [name, accept]
        // protocols[0] handles HTTP and WebSocket (a client offering no subprotocol binds to it);
        // protocols[1] only watches the listening socket.
        let protos = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 3)
        protos.initialize(repeating: lws_protocols(), count: 3)
        protos[0].name = UnsafePointer(name)
        protos[0].callback = qgLWSCallback
        protos[0].per_session_data_size = MemoryLayout<UInt64>.size
        // Small per-connection receive buffer: client messages are small and reassembled in Swift anyway;
        // lws allocates this for every WebSocket, so it weighs on the footprint per idle subscriber.
        protos[0].rx_buffer_size = 1024
        protos[0].tx_packet_size = LWSServer.txPacketSize
        protos[1].name = UnsafePointer(accept)
        protos[1].callback = qgLWSCallback
        protocols = protos

        // No keep-alive timers of lws's own (0 s): lws 4.1.6 inserts each connection's validity timer into one
        // sorted list walked from its head, O(n) per new connection and per pong — 17 % of the CPU of setting
        // up 10 000 WebSockets (Benchmarks/results/NOTES.md). `housekeeping` pings and drops instead, one sweep
        // a second. (A null policy would mean lws's default: pings after 300 s.)
        let retry = UnsafeMutablePointer<lws_retry_bo_t>.allocate(capacity: 1)
        retry.initialize(to: lws_retry_bo_t())
        retry.pointee.secs_since_valid_ping = 0
        retry.pointee.secs_since_valid_hangup = 0
        retryPolicy = retry

        var info = lws_context_creation_info()
        // No listener of lws's own (it would not share the port): ours is adopted below. NO_LISTEN_SERVER
        // rather than NO_LISTEN, so the vhost still sets up TLS for the sockets it adopts.
        info.port = CONTEXT_PORT_NO_LISTEN_SERVER
        info.protocols = UnsafePointer(protos)
        info.user = Unmanaged.passUnretained(self).toOpaque()
        info.retry_and_idle_policy = UnsafePointer(retry)
        // Not LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE: its fixed CSP (frame-ancestors
        // 'none') would be sent beside ours and browsers enforce both; the security headers come from
        // `options.responseHeaders` (SecurityHeaders), configurable.
        info.options = UInt64(LWS_SERVER_OPTION_VALIDATE_UTF8)
            | UInt64(LWS_SERVER_OPTION_DISABLE_IPV6)
        // How long a connection may take over its handshake or its HTTP request (lws's timeouts; the wait for
        // a request's headers is the second one). A deferred answer gets its own bound (`awaitAnswer`).
        info.timeout_secs = UInt32(clamping: options.handshakeTimeoutSeconds)
        info.timeout_secs_ah_idle = UInt32(clamping: options.handshakeTimeoutSeconds)
        if let cert = options.tlsCertPath, let key = options.tlsKeyPath {
            info.options |= UInt64(LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT)
            let c = strdup(cert)!, k = strdup(key)!
            cStrings.append(c); cStrings.append(k)
            info.ssl_cert_filepath = UnsafePointer(c)
            info.ssl_private_key_filepath = UnsafePointer(k)
        }
        // permessage-deflate stays off: no extensions are offered (see LWS-NOTES: lws 4.1.6 aborts under it).
        info.extensions = nil

        var foreign: [UnsafeMutableRawPointer?] = [nil]
        if options.eventLoop == .libev {
            guard let ev = qg_ev_loop_new() else {
                _ = qg_close_fd(fd)
                throw LWSServerError.contextFailed("libev could not create a loop")
            }
            evLoop = ev
            foreign[0] = ev
            info.options |= UInt64(LWS_SERVER_OPTION_LIBEV)
        }
        let created = foreign.withUnsafeMutableBufferPointer { loops -> OpaquePointer? in
            // lws reads foreign_loops only while it creates the context.
            if evLoop != nil { info.foreign_loops = loops.baseAddress }
            return lws_create_context(&info)
        }
        guard let ctx = created else {
            _ = qg_close_fd(fd)
            if let ev = evLoop { qg_ev_loop_destroy(ev); evLoop = nil }
            throw LWSServerError.contextFailed("libwebsockets could not create loop \(index)'s context"
                + (options.eventLoop == .libev ? " on libev (is libwebsockets-evlib-ev installed?)" : ""))
        }
        guard let vhost = lws_get_vhost_by_name(ctx, "default"), qg_adopt_raw_file(vhost, fd, accept) != nil else {
            // lws closes an fd it failed to adopt.
            lws_context_destroy(ctx)
            if let ev = evLoop { qg_ev_loop_destroy(ev); evLoop = nil }
            throw LWSServerError.contextFailed("libwebsockets could not watch loop \(index)'s listening socket")
        }
        self.vhost = vhost

        if evLoop == nil {
            let tfd = qg_timerfd_create()
            guard tfd >= 0, qg_adopt_raw_file(vhost, tfd, accept) != nil else {
                if tfd >= 0 { _ = qg_close_fd(tfd) }
                lws_context_destroy(ctx)
                throw LWSServerError.contextFailed("loop \(index) could not watch its timer (timerfd): errno \(errno)")
            }
            timerFD = tfd
        } else {
            let et = UnsafeMutablePointer<qg_ev_timer_t>.allocate(capacity: 1)
            qg_ev_timer_init(et, Unmanaged.passUnretained(self).toOpaque(), qgEVTimerCallback)
            evTimer = et
        }

        Self.spare.withLock { if $0 < 0 { $0 = qg_open_spare_fd() } }
        context = ctx
        lock.lock()
        sharedContext = ctx
        lock.unlock()
        executor.attach(ctx)
        housekeepingAt = lws_now_usecs() + Self.housekeepingMicroseconds
        armTimer()
    }

    private var isStopping: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopping
    }

    private func runLoop() {
        if let ev = evLoop {
            // Returns once `wokenForJobs` sees the stop request and breaks the loop.
            if !isStopping { qg_ev_run(ev) }
        } else {
            while !isStopping {
                if lws_service(context, 0) < 0 { break }
            }
        }
        closeAllForShutdown()
        executor.detach()
        if let ev = evLoop, let et = evTimer { qg_ev_timer_stop(ev, et) }
        lock.lock()
        sharedContext = nil
        lock.unlock()
        lws_context_destroy(context) // also closes the adopted listening socket and timerfd
        timerFD = -1
        context = nil
        if let ev = evLoop { qg_ev_loop_destroy(ev); evLoop = nil }
        vhost = nil
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
            if let ev = evLoop { qg_ev_run_once(ev) } else if lws_service(context, 0) < 0 { break }
            rounds += 1
        }
    }

    /// `LWS_CALLBACK_EVENT_WAIT_CANCELLED`: run what other threads queued; on libev, also how a stop
    /// request ends `ev_run` (lws's own loop checks the flag itself between services).
    func wokenForJobs() {
        executor.runQueued()
        if let ev = evLoop, isStopping { qg_ev_break(ev) }
    }

    /// Whether this loop waits with epoll (libev's backend here) rather than poll.
    var usesEpoll: Bool { evLoop.map { qg_ev_backend_is_epoll($0) != 0 } ?? false }

    /// Takes every connection waiting on the listening socket and hands it to this loop's vhost.
    func acceptPending(_ listenerWSI: OpaquePointer) -> Int32 {
        guard let vhost else { return 0 }
        let fd = lws_get_socket_fd(listenerWSI)
        while true {
            let conn = Self.spare.withLock { _ in qg_accept(fd) }
            if conn < 0 {
                // EAGAIN: none left (or a transient error: the next readiness retries). At the open-files limit
                // the connection stays waiting and the listener readable: the loop would spin on it.
                if qg_is_file_limit(-conn) != 0 { shed(fd, listenerWSI) }
                break
            }
            accepted.add(1, ordering: .relaxed)
            // On failure lws has closed the descriptor already.
            _ = lws_adopt_socket_vhost(vhost, conn)
        }
        return 0
    }

    /// Asks for `timerFired` on the server after `us` microseconds; a later call replaces an earlier one.
    func wake(afterMicroseconds us: Int64) {
        requestedAt = lws_now_usecs() + max(0, us)
        armTimer()
    }

    /// Arms this loop's one timer for the sooner of the requested wake-up and the next housekeeping.
    /// On libev it is an ev_timer of our own, since lws 4.1.6's libev glue can fire a sul scheduled earlier
    /// than its armed deadline only at that deadline. On lws's poll loop it is a timerfd, not an lws_sul: lws
    /// waits for a sul with the time left truncated to whole milliseconds, so it spins in poll(…, 0) through
    /// the last millisecond before each one — measured at 10 000–30 000 poll() calls a second over every
    /// descriptor with 3 000 pending sessions' deadlines, against a few hundred with the timerfd.
    private func armTimer() {
        let due = min(requestedAt ?? .max, housekeepingAt)
        let us = max(1, due - lws_now_usecs())
        if let ev = evLoop, let et = evTimer {
            qg_ev_timer_arm(ev, et, Double(us) / 1_000_000)
            return
        }
        guard timerFD >= 0 else { return }
        _ = qg_timerfd_arm(timerFD, us)
    }

    /// This loop's timer fired: housekeeping when it is due, the server's wake-up when it is.
    func timerFired() {
        let now = lws_now_usecs()
        if now >= housekeepingAt {
            housekeepingAt = now + Self.housekeepingMicroseconds
            housekeeping(now: now)
        }
        if let r = requestedAt, r <= now {
            requestedAt = nil
            server?.timerFired(on: self)
        }
        armTimer()
    }

    static let housekeepingMicroseconds: Int64 = 1_000_000

    /// Once a second. On libev, a wake-up of lws: its glue re-arms its own timer only when its idle watcher
    /// runs after some I/O, and `ev_timer_set` on the running watcher changes nothing, so on a quiet loop
    /// lws's timeouts (an unfinished handshake or request, a close that is never acknowledged) came up to
    /// the next unrelated deadline late — measured 23 s for a 10 s one. Then the keep-alive: a WebSocket
    /// peer silent for `pingIntervalSeconds` gets a ping at its next WRITEABLE turn, and one still silent
    /// after twice that is dropped (no close frame: it does not read).
    private func housekeeping(now: Int64) {
        if evLoop != nil, let context { lws_cancel_service(context) }
        if let listener = pausedListener {
            pausedListener = nil
            lws_rx_flow_control(listener, 1)
        }
        reportShedding(now: now)
        let ping = Int64(options.pingIntervalSeconds) * 1_000_000 // 1–3600 s (LWSServerOptions)
        for c in connections.values where c.isWebSocket && c.closeCode == 0 {
            let silent = now - c.lastHeard
            // Dropped only once a ping was asked for and has been out a whole interval (a WRITEABLE turn that came
            // late does not shorten the peer's time to answer), or could not be written in all that time.
            if silent >= 2 * ping, c.pingOutstanding, c.pingSentAt == 0 || now - c.pingSentAt >= ping {
                c.closeCode = Int32(CloseCode.goingAway) // nothing more is queued or written for it
                idleDropped.add(1, ordering: .relaxed)
                lws_set_timeout(c.wsi, PENDING_TIMEOUT_WS_PONG_CHECK_GET_PONG, LWS_TO_KILL_ASYNC)
            } else if silent >= ping, !c.pingOutstanding {
                c.pingOutstanding = true
                c.pingDue = true
                lws_callback_on_writable(c.wsi)
            }
        }
    }

    /// Past the open-files limit: gives up the spare descriptor to take each waiting connection and close it at
    /// once (its client sees the connection end instead of a hang), then takes the spare again — libuv's answer to
    /// the same spin. Without it both loops ran at 100 % of a core while 250 clients waited on a limit of 150.
    /// Should another thread (libcurl, SQLite) have taken the last descriptors meanwhile, so that not even the
    /// spare can be had, the listener is not watched until the next housekeeping (at most a second): its
    /// connections wait in the backlog instead of the loop spinning on them.
    private func shed(_ listener: Int32, _ listenerWSI: OpaquePointer) {
        let closed: Int? = Self.spare.withLock { spare in
            if spare < 0 { spare = qg_open_spare_fd() }
            guard spare >= 0 else { return nil }
            _ = qg_close_fd(spare)
            var closed = 0
            while closed < Self.maxShedAtOnce {
                let conn = qg_accept(listener)
                if conn < 0 { break }
                _ = qg_close_fd(conn)
                closed += 1
            }
            spare = qg_open_spare_fd()
            return closed
        }
        guard let closed else {
            lws_rx_flow_control(listenerWSI, 0)
            pausedListener = listenerWSI
            return
        }
        shedAtFileLimit.add(closed, ordering: .relaxed)
    }

    /// Says, at most every 10 s, how many connections were shed at the open-files limit since it last said so.
    private func reportShedding(now: Int64) {
        let total = shedAtFileLimit.load(ordering: .relaxed)
        guard total > shedReported, now - shedReportedAt >= 10_000_000 else { return }
        server?.logger.warning("loop \(index): at the open-files limit, closed \(total - shedReported) new connections as they came; raise the limit (docs/OPERATIONS.md, \"Open files\") or add a node")
        shedReported = total
        shedReportedAt = now
    }

    /// The raw file that became readable: the timerfd (fire the timers) or the listening socket (accept).
    func rawFileReadable(_ wsi: OpaquePointer) -> Int32 {
        if timerFD >= 0, lws_get_socket_fd(wsi) == timerFD {
            qg_timerfd_drain(timerFD)
            timerFired()
            return 0
        }
        return acceptPending(wsi)
    }


    // MARK: - Connections (service thread)

    func connection(_ wsi: OpaquePointer, _ user: UnsafeMutableRawPointer?, create: Bool) -> LWSConnection? {
        guard let user else { return nil }
        let slot = user.assumingMemoryBound(to: UInt64.self)
        if slot.pointee != 0, let c = connections[slot.pointee] { return c }
        guard create else { return nil }
        let c = LWSConnection(id: (UInt64(index) << Self.serialBits) | nextSerial, wsi: wsi)
        nextSerial += 1
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
