internal import CWebSockets
import QRGateCore

// WebSocket: routing a frame to the loop that owns the peer (any thread), and on that loop message
// reassembly with a size bound, the per-peer outbox with coalescing, and closes with a code and reason.

extension LWSServer {
    /// Queues a frame for one peer, on the loop that owns it. With a `coalesceKey`, an unsent frame with
    /// the same key is replaced (only the newest matters).
    public func send(_ frame: WireFrame, to id: ConnectionID, coalesceKey: String? = nil) {
        guard let l = loop(of: id) else { return }
        on(l) { loop, local in loop.send(local ? frame : WireFrame(copying: frame), to: id, coalesceKey: coalesceKey) }
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
    /// Queues a frame made for (or copied to) this loop. Returns false when the peer is gone or its
    /// outbox was full and it was closed.
    @discardableResult
    func send(_ frame: WireFrame, to id: ConnectionID, coalesceKey: String?) -> Bool {
        guard let c = connections[id], c.isWebSocket, c.closeCode == 0 else { return false }
        if let key = coalesceKey, let i = c.outboxKeys.firstIndex(of: key) {
            // The older unsent frame is dropped and the new one queued last, so seq order holds.
            c.outbox.remove(at: i)
            c.outboxKeys.remove(at: i)
            coalesced.add(1, ordering: .relaxed)
        }
        if c.outbox.count >= options.outboxLimit {
            slowConsumersClosed.add(1, ordering: .relaxed)
            close(id, code: CloseCode.slowConsumer, reason: "slow consumer: outbox over \(options.outboxLimit) frames")
            return false
        }
        c.outbox.append(frame)
        c.outboxKeys.append(coalesceKey)
        lws_callback_on_writable(c.wsi)
        return true
    }

    func close(_ id: ConnectionID, code: Int, reason: String) {
        guard let c = connections[id], c.closeCode == 0 else { return }
        c.closeCode = Int32(code)
        c.closeReason = String(reason.utf8.prefix(120)) ?? ""
        c.outbox.removeAll()
        c.outboxKeys.removeAll()
        lws_callback_on_writable(c.wsi)
    }

    func receive(_ c: LWSConnection, _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
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
        let id = c.id, binary = lws_frame_is_binary(c.wsi) != 0
        server?.toDelegate(from: self) { $0.webSocketReceived(id, message: message, binary: binary) }
        return 0
    }

    func writeFrame(_ c: LWSConnection) -> Int32 {
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
}
