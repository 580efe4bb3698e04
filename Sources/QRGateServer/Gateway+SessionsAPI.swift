import Foundation
import QRGateCore
import QRGateUpstream

/// A routed API request: `response` nil means it will be answered later on the loop.
struct APIResult { let response: HTTPResponse? }

/// A request body or credential problem, answered as `{"success":false,"error":…}`.
struct APIError: Error {
    let status: Int
    let reason: String
    var headers: [(String, String)] = []
    var response: HTTPResponse { .error(status, reason, headers: headers) }
}

extension Gateway {
    /// The REST API under /api/v1 (docs/API.md, docs/openapi.yaml). nil: not an API route.
    func sessionsAPI(_ request: HTTPRequest, connection: ConnectionID) -> APIResult? {
        // Routes answer with or without the trailing slash the original API used.
        let path = request.path.count > 1 && request.path.hasSuffix("/") ? String(request.path.dropLast()) : request.path
        guard path.hasPrefix("/api/v1/sessions") || path.hasPrefix("/api/v1/upstream") else { return nil }
        do throws(APIError) {
            switch (request.method, path) {
            case (.post, "/api/v1/sessions/init"): return APIResult(response: try initSession(request, connection))
            case (.get, "/api/v1/sessions/status"): return APIResult(response: try status(request))
            case (.post, "/api/v1/sessions/refresh-qr"): return APIResult(response: try refreshQR(request, connection))
            case (.post, "/api/v1/sessions/disconnect"): return APIResult(response: try disconnect(request, connection))
            case (.get, "/api/v1/sessions"): return APIResult(response: try list(request))
            case (.post, "/api/v1/sessions"): return APIResult(response: try createSession(request, connection))
            case (.get, "/api/v1/upstream/token-status"): return APIResult(response: try tokenStatus(request, connection))
            case (.post, "/api/v1/upstream/refresh-token"): return APIResult(response: try renewUpstreamToken(request, connection))
            case (.post, "/api/v1/upstream/token"): return APIResult(response: try installUpstreamToken(request, connection))
            default:
                let parts = path.split(separator: "/").map(String.init) // api v1 sessions ID token
                if request.method == .post, parts.count == 5, parts[2] == "sessions", parts[4] == "token" {
                    return APIResult(response: try browserToken(request, session: parts[3], connection))
                }
                if let allowed = Self.allowedMethods(path), !allowed.contains(request.method) {
                    return APIResult(response: .methodNotAllowed(request, allowed: allowed))
                }
                return APIResult(response: .error(404, "no such endpoint: \(request.method.rawValue) \(path.prefix(200))"))
            }
        } catch {
            return APIResult(response: error.response)
        }
    }

    /// The methods each known path answers (without its trailing slash); nil for an unknown path.
    static func allowedMethods(_ path: String) -> [HTTPRequest.Method]? {
        switch path {
        case "/api/v1/sessions/init", "/api/v1/sessions/refresh-qr", "/api/v1/sessions/disconnect",
             "/api/v1/upstream/refresh-token", "/api/v1/upstream/token", "/functions/v1/refresh-qr-codes", "/webhooks/evolution":
            return [.post]
        case "/api/v1/sessions/status", "/api/v1/upstream/token-status", "/metrics", "/readyz", "/api/v1/qr":
            return [.get]
        case "/api/v1/sessions":
            return [.get, .post]
        case "/healthz":
            return [.get, .head]
        default:
            let parts = path.split(separator: "/")
            if parts.count == 5, parts[0] == "api", parts[1] == "v1", parts[2] == "sessions", parts[4] == "token" { return [.post] }
            return nil
        }
    }

    // MARK: Credentials

    /// The principal behind `Authorization: Bearer|Api-Key …` (or `?token=` for browser tokens).
    func principal(_ request: HTTPRequest) throws(APIError) -> Principal? {
        if demoMode { return Principal(role: .admin) }
        guard let presented = request.headers["authorization"].flatMap(Self.bearer) ?? request.query["token"] else { return nil }
        switch auth.authenticate(presented) {
        case let .success(p): return p
        case let .failure(e): throw APIError(status: 401, reason: e.description)
        }
    }

    func require(_ request: HTTPRequest, _ role: Role) throws(APIError) -> Principal {
        guard let p = try principal(request) else { throw APIError(status: 401, reason: "missing credentials (Authorization: Bearer KEY)") }
        guard p.role >= role else { throw APIError(status: 403, reason: "this needs the \(role.rawValue) role") }
        return p
    }

    /// For what concerns the whole gateway (upstream credentials, the refresh cycle): a tenant's key is refused.
    func requireUnscoped(_ request: HTTPRequest, _ role: Role) throws(APIError) -> Principal {
        let p = try require(request, role)
        if let prefix = p.prefix {
            throw APIError(status: 403, reason: "this key covers the sessions starting with \(prefix) only; this needs a key for every session")
        }
        return p
    }

    /// A tenant's key binds its sessions to upstream instances in its own namespace only: another tenant's
    /// instance would hand it that tenant's QR codes, webhooks and phone.
    func check(_ p: Principal, instance: String) throws(APIError) {
        if let prefix = p.prefix, !instance.hasPrefix(prefix) {
            throw APIError(status: 403, reason: "this key covers the sessions starting with \(prefix) only: instanceName must start with it too")
        }
    }

    /// A tenant's key acts on its own sessions only.
    func check(_ p: Principal, opens id: String) throws(APIError) {
        guard p.canSee(id) else {
            let why = p.prefix.map { "this key covers the sessions starting with \($0) only, not \(id)" } ?? "this token does not open session \(id)"
            throw APIError(status: 403, reason: why)
        }
    }

    // MARK: Bodies

    func body(_ request: HTTPRequest, allowed: Set<String>) throws(APIError) -> [String: JSONValue] {
        guard let json = JSONValue.parse(request.body) else { throw APIError(status: 400, reason: "body is not valid JSON") }
        guard json.depth <= ClientMessage.maxDepth else { throw APIError(status: 400, reason: "body nests deeper than \(ClientMessage.maxDepth) levels") }
        guard case let .object(o) = json else { throw APIError(status: 400, reason: "body must be a JSON object") }
        if let extra = o.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw APIError(status: 400, reason: "unknown field \"\(extra.prefix(40))\"")
        }
        return o
    }

    func string(_ o: [String: JSONValue], _ key: String, required: Bool = false, id: Bool = false) throws(APIError) -> String? {
        guard let v = o[key], v != .null else {
            if required { throw APIError(status: 400, reason: "\"\(key)\" is required") }
            return nil
        }
        guard case let .string(s) = v else { throw APIError(status: 400, reason: "\"\(key)\" must be a string") }
        guard s.unicodeScalars.count <= 1024 else { throw APIError(status: 400, reason: "\"\(key)\" is longer than 1024 characters") }
        // No field has a use for them, and a NUL is text PostgreSQL refuses to store.
        guard !s.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            throw APIError(status: 400, reason: "\"\(key)\" must not contain control characters")
        }
        if id && !ClientMessage.isValidSessionID(s) {
            throw APIError(status: 400, reason: "\"\(key)\" must be 1–128 characters of A–Z a–z 0–9 . _ : @ -")
        }
        return s
    }

    func session(_ id: String) throws(APIError) -> SessionRegistry.Session {
        guard let s = runtime.registry[id] else { throw APIError(status: 404, reason: "session \(id) not found") }
        return s
    }

    // MARK: Endpoints

    private func initSession(_ request: HTTPRequest, _ connection: ConnectionID) throws(APIError) -> HTTPResponse? {
        let p = try require(request, .service)
        let o = try body(request, allowed: ["sessionId", "numberId", "instanceName", "instanceToken", "phoneNumber"])
        let id = try string(o, "sessionId", required: true, id: true)!
        try check(p, opens: id)
        let instance = try string(o, "instanceName", id: true) ?? id
        try check(p, instance: instance)
        let token = try string(o, "instanceToken"), number = try string(o, "numberId"), phone = try phoneNumber(o)
        // Carried out where the session runs (this node, or its owner in a cluster), then answered from here.
        runtime.order(id, .initSession(instance: instance, token: token, numberId: number, phone: phone), isolation: self) { outcome in
            switch outcome {
            case let .refresh(.rateLimited(wait)):
                return self.server.respond(connection, .error(429, "refreshed too recently; try again in \(wait) s", headers: [("Retry-After", String(wait))]))
            case let .unavailable(why):
                return self.server.respond(connection, .error(503, why))
            case .notFound:
                return self.server.respond(connection, .error(404, "session \(id) not found"))
            case .refresh, .done:
                break
            }
            self.answerWithQR(id, connection: connection, message: self.qrMessage)
        }
        return nil
    }

    /// `phoneNumber` of a request body: absent, or digits with the country code (400 naming the field otherwise).
    private func phoneNumber(_ o: [String: JSONValue]) throws(APIError) -> String? {
        guard let raw = try string(o, "phoneNumber") else { return nil }
        guard let digits = PhoneNumber.validate(raw) else { throw APIError(status: 400, reason: PhoneNumber.rule) }
        return digits
    }

    private var qrMessage: String { "QR code generated. Please scan within \(config.qr.ttlSeconds) seconds." }

    /// Answers with the session at once when it shows a QR or is linked (an init of a running session, or an
    /// order whose owner's new QR reached this node with its answer), else with its next QR.
    private func answerWithQR(_ id: String, connection: ConnectionID, message: String) {
        guard let s = runtime.registry[id] else { return server.respond(connection, .error(404, "session \(id) not found")) }
        if s.machine.status == .connected || s.machine.qr != nil {
            let message = s.machine.status == .connected ? "Session already connected." : message
            respondWhenDurable(id, connection) { s in .json(200, ["success": true, "data": self.sessionData(s, message: message)]) }
        } else {
            answerWithNextQR(id, connection: connection, message: message)
        }
    }

    /// Answers the deferred request with the session once its QR (or the reason for none) is known.
    private func answerWithNextQR(_ id: String, connection: ConnectionID, message: String) {
        let timeout = config.upstream.timeoutSeconds * 2 + 2
        runtime.waitForQR(id, timeout: timeout, isolation: self) { event in
            self.respondWhenDurable(id, connection) { s in
                switch event {
                case let .upstreamError(reason)? where reason == UpstreamError.unauthorized.description && s.instanceToken != nil,
                     let .error(reason)? where reason == UpstreamError.unauthorized.description && s.instanceToken != nil:
                    // The upstream refused the instanceToken the client gave for this session: the caller's credential, not ours.
                    .error(403, "the upstream refused this session's instanceToken: \(reason)")
                case let .upstreamError(reason)?: .error(502, reason)
                case let .error(reason)?: .error(502, reason)
                case .connected?: .json(200, ["success": true, "data": self.sessionData(s, message: "Session already connected.")])
                case .qrGenerated?: .json(200, ["success": true, "data": self.sessionData(s, message: message)])
                default: .json(202, ["success": true, "data": self.sessionData(s, message: "QR code not available yet; subscribe for updates.")])
                }
            }
        }
    }

    /// A state change is stored before the call that caused it is answered, with the session as it is then
    /// (what subscribers have been shown); a store that cannot manage it within `storeWaitSeconds` gets the
    /// call a 503 with the store's reason.
    func respondWhenDurable(_ id: String, _ connection: ConnectionID, _ response: @escaping (SessionRegistry.Session) -> HTTPResponse) {
        runtime.whenDurable(id, within: Self.storeWaitSeconds, isolation: self) { [server, store = runtime.store] stored in
            guard stored else {
                return server.respond(connection, .error(503, "the change is not stored yet: \(store.problem() ?? "the store is slow"); it is written again until the store takes it"))
            }
            guard let s = self.runtime.registry[id] else { return server.respond(connection, .error(404, "session \(id) not found")) }
            server.respond(connection, response(s))
        }
    }

    /// How long a call or a subscription waits for the store before it is told the store is not answering.
    static let storeWaitSeconds = 10.0

    func sessionData(_ s: SessionRegistry.Session, message: String? = nil) -> [String: Any] {
        let m = s.visibleMachine // what subscribers were shown: nothing before it is stored
        var d: [String: Any] = [
            "sessionId": s.id, "status": m.status.rawValue,
            "qrCode": m.qr?.pngDataURL ?? NSNull(),
            "qrExpiresAt": m.qrExpiresAt.map(SessionEventEncoding.iso8601) ?? NSNull(),
            "attempt": m.attempt, "maxAttempts": m.maxAttempts,
        ]
        d["pairingCode"] = m.qr?.pairingCode ?? NSNull()
        if let message { d["message"] = message }
        return d
    }

    private func status(_ request: HTTPRequest) throws(APIError) -> HTTPResponse {
        // Credentials first: a request without any is 401 whatever else is wrong with it.
        guard let p = try principal(request) else { throw APIError(status: 401, reason: "missing credentials (Authorization: Bearer KEY, or ?token=)") }
        guard let id = request.query["sessionId"] else { throw APIError(status: 400, reason: "query parameter sessionId is required") }
        guard ClientMessage.isValidSessionID(id) else {
            throw APIError(status: 400, reason: "sessionId must be 1–128 characters of A–Z a–z 0–9 . _ : @ -")
        }
        try check(p, opens: id)
        let s = try session(id)
        var d = sessionData(s)
        d["phoneNumber"] = s.numberId ?? NSNull()
        d["pairingPhone"] = s.phoneNumber.map(PhoneNumber.masked) ?? NSNull()
        d["isReady"] = s.visibleMachine.status == .connected
        d["connectedAt"] = s.visibleMachine.connectedAt.map(SessionEventEncoding.iso8601) ?? NSNull()
        d["lastActiveAt"] = SessionEventEncoding.iso8601(s.lastActiveAt)
        return .json(200, ["success": true, "data": d])
    }

    private func refreshQR(_ request: HTTPRequest, _ connection: ConnectionID) throws(APIError) -> HTTPResponse? {
        let p = try require(request, .service)
        let o = try body(request, allowed: ["sessionId", "phoneNumber"])
        let id = try string(o, "sessionId", required: true, id: true)!
        let phone = try phoneNumber(o)
        try check(p, opens: id)
        _ = try session(id)
        let order: SessionOrder = phone.map { .pair(phone: $0, asAttempt: false) } ?? .refresh
        runtime.order(id, order, isolation: self) { outcome in
            let refusal: HTTPResponse? = switch outcome {
            case .refresh(.alreadyConnected): .error(400, SessionMachine.alreadyConnectedMessage)
            case let .refresh(.rateLimited(wait)): .error(429, "refreshed too recently; try again in \(wait) s", headers: [("Retry-After", String(wait))])
            case .refresh(.noAttemptsLeft): .error(409, "no attempts left")
            case .notFound: .error(404, "session \(id) not found")
            case let .unavailable(why): .error(503, why)
            case .refresh(.accepted), .done: nil
            }
            if let refusal { return self.server.respond(connection, refusal) }
            self.answerWithQR(id, connection: connection, message: "QR code refreshed. Please scan within \(self.config.qr.ttlSeconds) seconds.")
        }
        return nil
    }

    private func disconnect(_ request: HTTPRequest, _ connection: ConnectionID) throws(APIError) -> HTTPResponse? {
        let p = try require(request, .service)
        let o = try body(request, allowed: ["sessionId"])
        let id = try string(o, "sessionId", required: true, id: true)!
        try check(p, opens: id)
        _ = try session(id)
        runtime.order(id, .disconnect, isolation: self) { outcome in
            switch outcome {
            case let .unavailable(why): self.server.respond(connection, .error(503, why))
            case .notFound: self.server.respond(connection, .error(404, "session \(id) not found"))
            case .done, .refresh:
                self.respondWhenDurable(id, connection) { s in .json(200, ["success": true, "data": self.sessionData(s, message: "Session disconnected.")]) }
            }
        }
        return nil
    }

    private func list(_ request: HTTPRequest) throws(APIError) -> HTTPResponse {
        let p = try require(request, .service)
        var stale: Double?
        if let raw = request.query["stale"] {
            guard let v = Double(raw), v >= 0, v < 1e9 else { throw APIError(status: 400, reason: "stale must be a number of seconds") }
            stale = v
        }
        let now = clock.now()
        let rows = runtime.registry.sessions.values.filter { p.canSee($0.id) }.sorted { $0.id < $1.id }.compactMap { s -> [String: Any]? in
            let qrAge = now.timeIntervalSince(s.visibleMachine.qrUpdatedAt ?? s.createdAt)
            if let stale, !(s.visibleMachine.status == .pending && qrAge > stale) { return nil }
            var d = sessionData(s)
            d["instanceName"] = s.instanceName
            d["qrAgeSeconds"] = s.visibleMachine.qrUpdatedAt.map { Int(now.timeIntervalSince($0)) } ?? NSNull()
            d["lastError"] = s.visibleMachine.lastError ?? NSNull()
            d["lastActiveAt"] = SessionEventEncoding.iso8601(s.lastActiveAt)
            d.removeValue(forKey: "qrCode")
            return d
        }
        return .json(200, ["success": true, "data": ["sessions": rows, "count": rows.count]])
    }

    func createSession(_ request: HTTPRequest, _ connection: ConnectionID) throws(APIError) -> HTTPResponse? {
        let p = try require(request, .admin)
        let o = try body(request, allowed: ["sessionId", "instanceName", "instanceToken", "numberId"])
        let id = try string(o, "sessionId", required: true, id: true)!
        try check(p, opens: id)
        let instance = try string(o, "instanceName", id: true) ?? id
        try check(p, instance: instance)
        guard runtime.add(id: id, instanceName: instance, instanceToken: try string(o, "instanceToken"), numberId: try string(o, "numberId"),
                          isolation: self) else {
            throw APIError(status: 409, reason: "session \(id) already exists")
        }
        respondWhenDurable(id, connection) { s in .json(201, ["success": true, "data": ["sessionId": id, "status": s.visibleMachine.status.rawValue]]) }
        return nil
    }

    private func browserToken(_ request: HTTPRequest, session id: String, _ connection: ConnectionID) throws(APIError) -> HTTPResponse? {
        let p = try require(request, .service)
        guard ClientMessage.isValidSessionID(id) else {
            throw APIError(status: 400, reason: "the session id in the path must be 1–128 characters of A–Z a–z 0–9 . _ : @ -")
        }
        try check(p, opens: id)
        _ = try session(id)
        // jwt-kit signs through its key collection (an actor): answered when the token is made.
        Task { [auth, server, logger] in
            let response: HTTPResponse
            do {
                let (token, exp) = try await auth.issueBrowserToken(session: id)
                response = .json(200, ["success": true, "data": ["sessionId": id, "role": "browser", "token": token,
                                                                 "expiresAt": SessionEventEncoding.iso8601(exp)]])
            } catch {
                logger.error("signing a browser token for \(id) failed: \(error)")
                response = APIError(status: 500, reason: "the token could not be signed").response
            }
            server.respond(connection, response)
        }
        return nil
    }

    // MARK: Upstream credentials (admin)

    private func tokenStatus(_ request: HTTPRequest, _ connection: ConnectionID) throws(APIError) -> HTTPResponse? {
        _ = try requireUnscoped(request, .admin)
        respondWithCredentialStatus(connection) { await $0.status() }
        return nil
    }

    private func renewUpstreamToken(_ request: HTTPRequest, _ connection: ConnectionID) throws(APIError) -> HTTPResponse? {
        _ = try requireUnscoped(request, .admin)
        // A state of the gateway, not a fault of the request: 409.
        guard !config.upstream.tokenURL.isEmpty else { throw APIError(status: 409, reason: "no upstream.tokenURL configured: the key is static") }
        respondWithCredentialStatus(connection) { await $0.renewNow() }
        return nil
    }

    private func installUpstreamToken(_ request: HTTPRequest, _ connection: ConnectionID) throws(APIError) -> HTTPResponse? {
        _ = try requireUnscoped(request, .admin)
        let o = try body(request, allowed: ["accessToken", "appSecret", "expiresIn"])
        let token = try string(o, "accessToken", required: true)!
        guard token.unicodeScalars.count >= 8 else { throw APIError(status: 400, reason: "accessToken is too short") }
        let secret = try string(o, "appSecret")
        var expiresIn: Double?
        if let v = o["expiresIn"] {
            switch v {
            case let .int(i) where i > 0 && i < 100_000_000: expiresIn = Double(i)
            default: throw APIError(status: 400, reason: "expiresIn must be a positive number of seconds")
            }
        }
        let ttl = expiresIn
        respondWithCredentialStatus(connection) { await $0.install(token: token, expiresIn: ttl, clientSecret: secret) }
        return nil
    }

    private func respondWithCredentialStatus(_ connection: ConnectionID, _ work: @escaping @Sendable (UpstreamCredentials) async -> CredentialStatus) {
        Task {
            let s = await work(self.credentials)
            var d: [String: Any] = ["state": s.state.rawValue, "source": s.source,
                                    "expiresAt": s.expiresAt.map(SessionEventEncoding.iso8601) ?? NSNull(),
                                    "lastError": s.lastError ?? NSNull()]
            if let exp = s.expiresAt { d["expiresInSeconds"] = max(0, Int(exp.timeIntervalSinceNow)) }
            let response = HTTPResponse.json(200, ["success": true, "data": d])
            self.server.respond(connection, response)
        }
    }
}

extension Gateway {
    /// POST /functions/v1/refresh-qr-codes: one refresh cycle now, answered with the old cron job's JSON.
    func refreshCycle(_ request: HTTPRequest, connection: ConnectionID) -> HTTPResponse? {
        do { _ = try requireUnscoped(request, .service) } catch { return error.response }
        runtime.runCycle(isolation: self) { [server] results in
            let body: [String: Any] = [
                "success": true, "total_instances": results.count,
                "refreshed": results.filter(\.success).count, "failed": results.filter { !$0.success }.count,
                "results": results.map { r -> [String: Any] in
                    var o: [String: Any] = ["instance_name": r.instance, "success": r.success, "qr_updated": r.qrUpdated]
                    if let e = r.error { o["error"] = e }
                    return o
                },
            ]
            server.respond(connection, .json(200, body))
        }
        return nil
    }
}
