internal import CWebSockets
import QRGateCore

// WebSocket: routing a frame to the loop that owns the peer (any thread), and on that loop message
// reassembly with a size bound, the per-peer outbox with coalescing, and closes with a code and reason.

extension LWSServer {
    /// Queues a frame for one peer, on the loop that owns it. With a `coalesceKey`, an unsent frame with
    /// the same key is replaced (only the newest matters). With `notifyWhenWritten`, the delegate hears
    /// `webSocketWritten` once this frame has been handed to the kernel (pacing of long streams).
    public func send(_ frame: WireFrame, to id: ConnectionID, coalesceKey: String? = nil, notifyWhenWritten: Bool = false) {
        guard let l = loop(of: id) else { return }
        on(l) { loop, local in loop.send(local ? frame : WireFrame(copying: frame), to: id, coalesceKey: coalesceKey, marker: notifyWhenWritten) }
    }

    /// The same frame to many peers: each loop gets one call with its share of the peers and makes (at
    /// most) one copy of the bytes for all of them. Other loops are handed their share first, so they
    /// write while this one does.
    public func send(_ frame: WireFrame, to ids: [ConnectionID], coalesceKey: String? = nil) {
        if loops.count == 1 {
            on(loops[0]) { loop, local in
                let f = local ? frame : WireFrame(copying: frame)
                for id in ids { loop.send(f, to: id, coalesceKey: coalesceKey) }
            }
            return
        }
        var shares = [[ConnectionID]](repeating: [], count: loops.count)
        for id in ids {
            let i = LWSLoop.loopIndex(of: id)
            if i < loops.count { shares[i].append(id) }
        }
        // The calling loop (if any) goes last, once the others have their share.
        let here = loops.firstIndex { $0.executor.isLoopThread }
        let order = loops.indices.filter { $0 != here } + (here.map { [$0] } ?? [])
        for i in order where !shares[i].isEmpty {
            let share = shares[i]
            on(loops[i]) { loop, local in
                let f = local ? frame : WireFrame(copying: frame)
                for id in share { loop.send(f, to: id, coalesceKey: coalesceKey) }
            }
        }
    }

    /// Closes a WebSocket with a code and a short reason (sent once pending frames are out of the way).
    public func close(_ id: ConnectionID, code: Int, reason: String) {
        guard let l = loop(of: id) else { return }
        on(l) { loop, _ in loop.close(id, code: code, reason: reason) }
    }
}

extension LWSLoop {
    /// Queues a frame made for (or copied to) this loop. Returns false when the peer is gone or was
    /// closed as a slow consumer.
    ///
    /// Flow control is by bytes and time: a peer is closed (4008) when its unsent bytes have stayed over
    /// `outboxBytes` for `slowConsumerSeconds`, checked as frames arrive for it, or at once past four
    /// times `outboxBytes`. Coalescing keeps a reader that is behind at one countdown and one QR per session.
    @discardableResult
    func send(_ frame: WireFrame, to id: ConnectionID, coalesceKey: String?, marker: Bool = false) -> Bool {
        guard let c = connections[id], c.isWebSocket, c.closeCode == 0 else { return false }
        // Nothing queued here or in lws: the frame leaves at once, in one `send`, without waiting for a
        // WRITEABLE turn (each turn is a `poll()` over every connection of the loop). What the kernel does
        // not take, lws 4.1 keeps (its `buflist_out`) and sends before anything else; the next frames then
        // queue in the outbox, where flow control counts them. No `lws_send_pipe_choked` first: it is a
        // `poll()` syscall per frame, and lws 4.1 no longer refuses back-to-back writes (output.c).
        // Not over HTTP/2 (a WebSocket stream of a TLS connection): there the stream's credit and the network
        // connection's buffer decide, which lws checks only at WRITEABLE.
        if c.outbox.isEmpty, !c.readSinceWriteable, !c.noDirectWrites, lws_partial_buffered(c.wsi) == 0,
           lws_get_network_wsi(c.wsi) == c.wsi {
            guard frame.write(to: c.wsi) >= 0 else {
                c.noDirectWrites = true // lws closes it; later frames queue until then
                lws_set_timeout(c.wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC)
                return false
            }
            // Told from the executor, never from inside this call: the caller (a snapshot stream's pump)
            // may not have saved its own state yet.
            if marker { server?.toDelegateLater(from: self) { $0.webSocketWritten(id) } }
            return true
        }
        let before = c.outbox.bytes
        if c.outbox.push(frame, size: frame.count, key: coalesceKey, marker: marker) {
            coalesced.add(1, ordering: .relaxed)
        }
        unsentBytes.add(c.outbox.bytes - before, ordering: .relaxed)
        let limit = options.outboxBytes
        if c.outbox.bytes > limit {
            let now = lws_now_usecs()
            if c.overSince == 0 { c.overSince = now }
            let over = Double(now - c.overSince) / 1e6
            if c.outbox.bytes > limit * 4 || over >= options.slowConsumerSeconds {
                slowConsumersClosed.add(1, ordering: .relaxed)
                let why = c.outbox.bytes > limit * 4
                    ? "slow consumer: \(c.outbox.bytes) bytes unsent, over 4 × server.outboxBytes"
                    : "slow consumer: over \(limit) bytes unsent for \(Int(over)) s"
                close(id, code: CloseCode.slowConsumer, reason: why)
                return false
            }
        }
        lws_callback_on_writable(c.wsi)
        return true
    }

    /// Closes once what lws already holds is out: the close frame goes at the next WRITEABLE. A peer
    /// that never reads again is cut by lws after `closeGraceSeconds`.
    func close(_ id: ConnectionID, code: Int, reason: String) {
        guard let c = connections[id], c.closeCode == 0 else { return }
        c.closeCode = Int32(code)
        c.closeReason = String(reason.utf8.prefix(120)) ?? ""
        unsentBytes.subtract(c.outbox.bytes, ordering: .relaxed)
        c.outbox.removeAll()
        c.overSince = 0
        lws_set_timeout(c.wsi, PENDING_TIMEOUT_CLOSE_SEND, Int32(Self.closeGraceSeconds))
        lws_callback_on_writable(c.wsi)
    }

    /// At most this many frames, or bytes, leave for one peer per WRITEABLE turn.
    static let framesPerWrite = 1024
    static let bytesPerWrite = 256 * 1024

    /// How long a closing peer has to take its close frame before lws drops the connection.
    static let closeGraceSeconds = 10

    func receive(_ c: LWSConnection, _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        if c.closeCode != 0 { return 0 }
        c.readSinceWriteable = true
        heard(c)
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
        let id = c.id, binary = lws_frame_is_binary(c.wsi) != 0
        server?.toDelegate(from: self) { $0.webSocketReceived(id, message: message, binary: binary) }
        return 0
    }

    static let pingPayload: [UInt8] = Array("qrgate".utf8)

    /// The peer is alive: it sent something (a message, a fragment, a pong).
    func heard(_ c: LWSConnection) {
        c.lastHeard = lws_now_usecs()
        c.pingOutstanding = false
        c.pingSentAt = 0
    }

    func writeFrame(_ c: LWSConnection) -> Int32 {
        c.readSinceWriteable = false
        if c.closeCode != 0 {
            var bytes = Array(c.closeReason.utf8)
            lws_close_reason(c.wsi, lws_close_status(rawValue: UInt32(c.closeCode)), &bytes, bytes.count)
            return -1
        }
        if c.pingDue {
            // Ahead of any queued frame (control frames may go between messages). Not empty: lws 4.1.6 reports
            // no LWS_CALLBACK_RECEIVE_PONG for an empty pong (ops-ws.c), and the pong is how we hear the peer.
            c.pingDue = false
            let pre = Int(qg_lws_pre())
            let sent = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: pre + Self.pingPayload.count) { buf in
                _ = UnsafeMutableBufferPointer(rebasing: buf[pre...]).initialize(from: Self.pingPayload)
                return lws_write(c.wsi, buf.baseAddress! + pre, Self.pingPayload.count, LWS_WRITE_PING)
            }
            if sent < 0 { return -1 }
            c.pingSentAt = lws_now_usecs()
        }
        // Several frames per WRITEABLE while the kernel takes them: a peer watching thousands of sessions
        // gets thousands of small frames a second, and one frame per turn of the loop (a poll over every
        // descriptor) would never keep up. A bound keeps one busy peer from starving the others.
        var frames = 0, bytes = 0
        while let (frame, marker) = c.outbox.pop() {
            unsentBytes.subtract(frame.count, ordering: .relaxed)
            if frame.write(to: c.wsi) < 0 { return -1 }
            frames += 1
            bytes += frame.count
            if marker {
                let id = c.id
                server?.toDelegate(from: self) { $0.webSocketWritten(id) }
            }
            // A write the kernel did not take whole is held by lws: stop there (no `poll()` per frame).
            if c.closeCode != 0 || c.outbox.isEmpty || frames >= Self.framesPerWrite || bytes >= Self.bytesPerWrite
                || lws_partial_buffered(c.wsi) != 0 { break }
        }
        if c.overSince != 0, c.outbox.bytes <= options.outboxBytes { c.overSince = 0 }
        if !c.outbox.isEmpty || c.closeCode != 0 { lws_callback_on_writable(c.wsi) }
        return 0
    }
}
