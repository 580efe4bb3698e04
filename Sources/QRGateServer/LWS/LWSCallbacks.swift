internal import CWebSockets

// The C entry points (non-capturing, nonisolated) and the callback dispatch of each `LWSLoop`.

extension LWSLoop {
    func handle(_ wsi: OpaquePointer, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
                _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        switch reason {
        case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
            wokenForJobs()
            return 0
        case LWS_CALLBACK_RAW_RX_FILE:
            return rawFileReadable(wsi)
        case LWS_CALLBACK_RAW_ADOPT_FILE, LWS_CALLBACK_RAW_CLOSE_FILE:
            return 0
        case LWS_CALLBACK_HTTP:
            guard let c = connection(wsi, user, create: true) else { return -1 }
            return beginHTTP(c, path: input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "/")
        case LWS_CALLBACK_HTTP_BODY:
            guard let c = connection(wsi, user, create: false) else { return 0 }
            return receiveBody(c, input, len)
        case LWS_CALLBACK_HTTP_BODY_COMPLETION:
            guard let c = connection(wsi, user, create: false) else { return 0 }
            return bodyComplete(c)
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
            guard let delegate = server?.delegate else { return -1 }
            guard let refusal = delegate.webSocketShouldAccept(webSocketInfo(wsi)) else { return 0 }
            if lws_return_http_status(wsi, UInt32(refusal.status), refusal.reason) != 0 { return -1 }
            return 1
        case LWS_CALLBACK_ESTABLISHED:
            guard let c = connection(wsi, user, create: true) else { return -1 }
            c.isWebSocket = true
            heard(c)
            let id = c.id, info = webSocketInfo(wsi)
            server?.toDelegate(from: self) { $0.webSocketOpened(id, info: info) }
            return 0
        case LWS_CALLBACK_RECEIVE:
            guard let c = connection(wsi, user, create: false) else { return -1 }
            return receive(c, input, len)
        case LWS_CALLBACK_RECEIVE_PONG:
            if let c = connection(wsi, user, create: false) { heard(c) }
            return 0
        case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
            connection(wsi, user, create: false)?.noDirectWrites = true
            return 0
        case LWS_CALLBACK_SERVER_WRITEABLE:
            guard let c = connection(wsi, user, create: false) else { return 0 }
            return writeFrame(c)
        case LWS_CALLBACK_CLOSED:
            if let c = forget(user) {
                unsentBytes.subtract(c.outbox.bytes, ordering: .relaxed)
                let id = c.id
                server?.toDelegate(from: self) { $0.webSocketClosed(id) }
            }
            return 0
        default:
            return lws_callback_http_dummy(wsi, reason, user, input, len)
        }
    }
}

func qgLWSCallback(_ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
                   _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
    guard let wsi, let ctx = lws_get_context(wsi), let raw = lws_context_user(ctx) else {
        return lws_callback_http_dummy(wsi, reason, user, input, len)
    }
    let loop = Unmanaged<LWSLoop>.fromOpaque(raw).takeUnretainedValue()
    return loop.handle(wsi, reason, user, input, len)
}

func qgEVTimerCallback(_ owner: UnsafeMutableRawPointer?) {
    guard let owner else { return }
    Unmanaged<LWSLoop>.fromOpaque(owner).takeUnretainedValue().timerFired()
}
