internal import CWebSockets
import QRGateCore
import Foundation

// HTTP on the loop that owns the connection: requests read from lws's header table, bodies bounded,
// answers as bytes or files.

extension LWSServer {
    /// Finishes a deferred HTTP response, on the loop that owns the connection (any thread).
    public func respond(_ id: ConnectionID, _ response: HTTPResponse) {
        guard let l = loop(of: id) else { return }
        on(l) { loop, _ in loop.respond(id, response) }
    }
}

extension LWSLoop {
    func respond(_ id: ConnectionID, _ response: HTTPResponse) {
        guard let c = connections[id], !c.isWebSocket else { return }
        if startResponse(c, response) != 0 {
            lws_set_timeout(c.wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC)
        }
    }

    func beginHTTP(_ c: LWSConnection, path: String) -> Int32 {
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
        headers["access-control-request-method"] = customHeader(wsi, "access-control-request-method:")
        let req = HTTPRequest(method: method, path: path, query: queryArgs(wsi), headers: headers, peer: peer(wsi))
        c.request = req
        c.bodyTooLarge = false
        c.awaitingBody = false
        c.completions = 0
        if let cl = header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH), let n = Int(cl), n > options.maxBodyBytes {
            return startResponse(c, .error(413, "request body over \(options.maxBodyBytes) bytes"))
        }
        // lws reads a request body only with a Content-Length (not chunked): refuse chunked bodies plainly.
        if lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0 {
            return startResponse(c, .error(411, "chunked request bodies are not supported; send Content-Length"))
        }
        // Wait for LWS_CALLBACK_HTTP_BODY_COMPLETION when lws will send one: a body (any method), or a POST
        // with an explicit "Content-Length: 0". Otherwise there is no completion to wait for.
        let lengthHeader = header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH)
        let contentLength = lengthHeader.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } ?? 0
        if contentLength > 0 || (method == .post && lengthHeader != nil) {
            c.awaitingBody = true
            return 0
        }
        return dispatchHTTP(c, req)
    }

    func receiveBody(_ c: LWSConnection, _ input: UnsafeMutableRawPointer?, _ len: Int) -> Int32 {
        guard c.request != nil else { return 0 }
        if c.request!.body.count + len > options.maxBodyBytes { c.bodyTooLarge = true; return 0 }
        if let input, len > 0 { c.request!.body.append(contentsOf: UnsafeRawBufferPointer(start: input, count: len)) }
        return 0
    }

    func bodyComplete(_ c: LWSConnection) -> Int32 {
        // lws completes a body once per request; a second completion means the client sent more bytes than
        // it declared, and lws would call this again for every read: end the connection.
        c.completions += 1
        if c.completions > 1 { return -1 }
        guard c.awaitingBody else { return 0 } // answered already (413, or no body was expected)
        c.awaitingBody = false
        guard let req = c.request else { return 0 }
        if c.bodyTooLarge {
            return startResponse(c, .error(413, "request body over \(options.maxBodyBytes) bytes"))
        }
        return dispatchHTTP(c, req)
    }

    /// The first loop asks the delegate and may answer at once; other loops hand the request over and
    /// are answered through `LWSServer.respond`.
    private func dispatchHTTP(_ c: LWSConnection, _ req: HTTPRequest) -> Int32 {
        guard let server else { return -1 }
        if index == 0 {
            guard let response = server.delegate?.http(req, connection: c.id) else { return awaitAnswer(c) } // deferred
            return startResponse(c, response)
        }
        let id = c.id
        server.toDelegate(from: self) { [weak server] d in
            if let response = d.http(req, connection: id) { server?.respond(id, response) }
        }
        return awaitAnswer(c)
    }

    /// An answer that comes later (an upstream call, another loop) is not held to the handshake timeout lws
    /// armed for the request (`server.handshakeTimeoutSeconds`, which may be 1 s): it gets `deferredAnswerSeconds`,
    /// past the longest `upstream.timeoutSeconds` (300 s), as a last bound on a connection kept open for it.
    private func awaitAnswer(_ c: LWSConnection) -> Int32 {
        lws_set_timeout(c.wsi, PENDING_TIMEOUT_HTTP_CONTENT, Int32(Self.deferredAnswerSeconds))
        return 0
    }

    static let deferredAnswerSeconds = 360

    /// The answer's own headers, the security headers every answer carries, and CORS for an allowed origin.
    private func headers(of response: HTTPResponse, to c: LWSConnection) -> [(String, String)] {
        var h = response.headers + options.responseHeaders
        // Answers differ by Origin once some origins are allowed: caches must keep them apart.
        if !options.corsOrigins.isEmpty { h.append(("Vary", "Origin")) }
        if let origin = c.request?.headers["origin"], options.corsOrigins.contains(origin) {
            h += [("Access-Control-Allow-Origin", origin), ("Access-Control-Expose-Headers", "Retry-After")]
        }
        return h
    }

    private func startResponse(_ c: LWSConnection, _ response: HTTPResponse) -> Int32 {
        guard !c.responding else { return 0 }
        c.responding = true
        let wsi = c.wsi
        let allHeaders = headers(of: response, to: c)
        switch response.body {
        case let .file(path):
            let mime = lws_get_mimetype(path, nil).map { String(cString: $0) } ?? "application/octet-stream"
            var extra = [UInt8](repeating: 0, count: 2048)
            let n = extra.withUnsafeMutableBufferPointer { buf -> Int in
                let start = buf.baseAddress!
                var p: UnsafeMutablePointer<UInt8>? = start
                let end = start + buf.count - 1
                for (name, value) in allHeaders {
                    // A header that does not fit fails the answer rather than serving a page without its CSP.
                    if lws_add_http_header_by_name(wsi, name.lowercased() + ":", value, Int32(value.utf8.count), &p, end) != 0 { return -1 }
                }
                return p! - start
            }
            if n < 0 { return -1 }
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
                if lws_add_http_common_headers(wsi, UInt32(response.status), response.contentType, lws_filepos_t(body.count), &p, end) != 0 { return false }
                for (name, value) in allHeaders {
                    if lws_add_http_header_by_name(wsi, name.lowercased() + ":", value, Int32(value.utf8.count), &p, end) != 0 { return false }
                }
                return lws_finalize_write_http_header(wsi, start, &p, end) == 0
            }
            guard ok else { return -1 }
            c.pendingBody = body
            c.bodyOffset = 0
            if body.isEmpty || c.request?.method == .head { return finishHTTP(c) }
            // The body right behind its headers when nothing waits in lws's send buffer (lws sends what the
            // kernel does not take first, at the next WRITEABLE): a WRITEABLE turn per answer was a `poll()`
            // over every descriptor for each of the hundreds of upstream polls a second the in-process
            // simulator answers.
            if lws_partial_buffered(wsi) == 0 { return writeBody(c) }
            lws_callback_on_writable(wsi)
            return 0
        }
    }

    func writeBody(_ c: LWSConnection) -> Int32 {
        guard c.responding, c.bodyOffset < c.pendingBody.count else { return 0 }
        let pre = Int(qg_lws_pre())
        let chunk = min(LWSServer.txPacketSize, c.pendingBody.count - c.bodyOffset)
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

    private func finishHTTP(_ c: LWSConnection) -> Int32 {
        c.pendingBody = []
        c.bodyOffset = 0
        c.request = nil
        c.responding = false
        return lws_http_transaction_completed(c.wsi) != 0 ? -1 : 0
    }

    // MARK: Header helpers

    func webSocketInfo(_ wsi: OpaquePointer) -> WebSocketInfo {
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
