import Foundation

/// The whole configuration: `Config/qrgate.json` with `QRGATE_*` environment overrides.
/// Every key has a default, so an empty file is a valid configuration.
public struct Config: Codable, Sendable, Equatable {
    public var server = Server()
    public var qr = QR()
    public var log = Log()
    public var upstream = Upstream()
    public var simulator = Simulator()
    public var poll = Poll()
    public var refresh = Refresh()
    public var auth = Auth()
    public var events = Events()
    public var store = Store()
    public var cluster = Cluster()
    /// Sessions to watch from start-up.
    public var sessions: [SessionSeed] = []
    /// With the simulator upstream, this session is created and started at start-up ("" for none).
    public var demoSession = "demo"

    public init() {}

    public struct Poll: Codable, Sendable, Equatable {
        /// A pending session's upstream is asked this often (unless a webhook brought fresher news).
        public var intervalSeconds = 5.0
        /// Cap of the per-session exponential backoff after upstream failures.
        public var backoffMaxSeconds = 60.0
        /// A linked session's state is checked this often, so an unlink is noticed without webhooks.
        public var connectedIntervalSeconds = 30.0
        /// After a QR came by webhook, a pending session's next poll waits this long: the upstream tells
        /// of rotations (WhatsApp's come every ~20 s), and the poll only catches a webhook that was lost.
        public var afterWebhookSeconds = 25.0
    }

    public struct Refresh: Codable, Sendable, Equatable {
        /// Every pending session is refreshed this often (the old cron job's cycle).
        public var cycleSeconds = 60.0
        /// Admin refreshes of one session at most this often.
        public var minIntervalSeconds = 3.0
    }

    public struct Auth: Codable, Sendable, Equatable {
        /// Keys as given, or `sha256:<hex>` of the key (then only the hash is kept in config); an entry
        /// may be `{"key": "…", "prefix": "shop-"}`: that key sees only sessions whose id starts so.
        public var serviceKeys: [APIKey] = []
        public var adminKeys: [APIKey] = []
        /// HMAC secret of browser tokens; empty: a random one per process (tokens die with a restart).
        public var tokenSecret = ""
        public var browserTokenTTLSeconds = 900
        /// A Supabase project's own JWTs, accepted wherever a key or a browser token is.
        public var supabase = SupabaseAuth()
    }

    /// How a Supabase project's JWTs are checked and what they grant: `role: service_role` is a
    /// service key; any other role is a browser for the sessions its `sessionsClaim` lists.
    public struct SupabaseAuth: Codable, Sendable, Equatable {
        /// The project's JWT secret (HS256; Settings → API → JWT secret). Empty: HS256 tokens are refused.
        public var jwtSecret = ""
        /// A JWKS file with the project's asymmetric signing keys (ES256, RS256), e.g. a saved copy of
        /// `https://<project>.supabase.co/auth/v1/.well-known/jwks.json`. Read at start.
        public var jwksFile = ""
        /// Dotted path of the claim listing the sessions a user's token opens.
        public var sessionsClaim = "app_metadata.qrgate_sessions"
        /// A token with an `aud` claim must name one of these; tokens without `aud` (the anon and
        /// service_role keys) pass.
        public var audiences = ["authenticated"]

        /// Whether any Supabase token can be verified.
        public var enabled: Bool { !jwtSecret.isEmpty || !jwksFile.isEmpty }
    }

    public struct Events: Codable, Sendable, Equatable {
        /// Recent events kept per session for `since` recovery.
        public var logCapacity = 256
        /// Stored events older than this are dropped.
        public var maxAgeSeconds = 3600.0
        /// The events kept per session (in memory and in the store) weigh at most this many bytes, oldest
        /// dropped first; the newest is always kept.
        public var maxBytesPerSession = EventLog.defaultMaxBytes
    }

    public struct Store: Codable, Sendable, Equatable {
        /// `sqlite` (durable, the default), `postgres` (`url`), or `memory`.
        public var mode = StoreMode.sqlite
        public var path = "data/qrgate.sqlite"
        /// `postgres://user:password@host:port/database?sslmode=disable|prefer|require` for `mode = postgres`
        /// (also `DATABASE_URL` or `QRGATE_STORE_URL`). Logged with its password masked.
        public var url = ""
        /// Base64 of 32 bytes sealing instance tokens and phone numbers at rest in PostgreSQL; every node
        /// needs the same one. Empty: a key is made once and kept in the database itself (weaker: whoever
        /// reads the database reads the key).
        public var sealKey = ""
    }

    /// Several nodes on one PostgreSQL (`store.mode = postgres`): every node runs the sessions it holds a
    /// lease on and follows the others over the bus (LISTEN/NOTIFY). docs/OPERATIONS.md.
    public struct Cluster: Codable, Sendable, Equatable {
        /// This node's name in the leases ("" : the host name and process id). A node restarted with the same
        /// name takes its own sessions back at once instead of waiting for their leases to lapse; two live
        /// nodes must never share one.
        public var nodeId = ""
        /// A dead node's sessions run on another node within this many seconds (leases last 70 % of it and
        /// are renewed every 20 %; a node that cannot renew stops running them before they lapse).
        public var leaseSeconds = 10.0
        /// How long an order (a refresh, an init, a disconnect) sent to the node that runs the session waits
        /// for its answer.
        public var orderTimeoutSeconds = 5.0
    }

    /// One API key of `auth.serviceKeys` / `auth.adminKeys`: a string, or an object scoping it to the
    /// sessions whose id starts with `prefix` (one tenant's key).
    public struct APIKey: Codable, Sendable, Equatable, ExpressibleByStringLiteral {
        public var key: String
        public var prefix: String?

        enum CodingKeys: String, CodingKey, CaseIterable { case key, prefix }

        public init(key: String, prefix: String? = nil) { self.key = key; self.prefix = prefix }
        public init(stringLiteral value: String) { self.init(key: value) }

        public init(from decoder: Decoder) throws {
            if let plain = try? decoder.singleValueContainer().decode(String.self) {
                self.init(key: plain)
                return
            }
            try AnyKey.refuseUnknown(in: decoder, known: CodingKeys.allCases.map(\.rawValue))
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(key: try c.decode(String.self, forKey: .key), prefix: try c.decodeIfPresent(String.self, forKey: .prefix))
        }

        public func encode(to encoder: Encoder) throws {
            if let prefix {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(key, forKey: .key)
                try c.encode(prefix, forKey: .prefix)
            } else {
                var c = encoder.singleValueContainer()
                try c.encode(key)
            }
        }
    }

    /// A session listed in the configuration.
    public struct SessionSeed: Codable, Sendable, Equatable {
        public var sessionId: String
        public var instanceName: String?
        public var instanceToken: String?
        public var numberId: String?

        enum CodingKeys: String, CodingKey, CaseIterable { case sessionId, instanceName, instanceToken, numberId }

        /// Like every other key, an unknown one inside `sessions[i]` stops start-up.
        public init(from decoder: Decoder) throws {
            try AnyKey.refuseUnknown(in: decoder, known: CodingKeys.allCases.map(\.rawValue))
            let c = try decoder.container(keyedBy: CodingKeys.self)
            sessionId = try c.decode(String.self, forKey: .sessionId)
            instanceName = try c.decodeIfPresent(String.self, forKey: .instanceName)
            instanceToken = try c.decodeIfPresent(String.self, forKey: .instanceToken)
            numberId = try c.decodeIfPresent(String.self, forKey: .numberId)
        }

        public init(sessionId: String, instanceName: String? = nil, instanceToken: String? = nil, numberId: String? = nil) {
            self.sessionId = sessionId; self.instanceName = instanceName; self.instanceToken = instanceToken; self.numberId = numberId
        }
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }

        /// Like every other key, an unknown one inside an entry of a list (`sessions[i]`, a key object) stops start-up.
        static func refuseUnknown(in decoder: Decoder, known: [String]) throws {
            let any = try decoder.container(keyedBy: AnyKey.self)
            let known = Set(known)
            if let extra = any.allKeys.map(\.stringValue).sorted().first(where: { !known.contains($0) }) {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [AnyKey(stringValue: extra)],
                                                        debugDescription: "unknown configuration key"))
            }
        }
    }

    /// Where QR codes come from: Evolution API, or the built-in simulator.
    public struct Upstream: Codable, Sendable, Equatable {
        /// `simulator` (embedded default, served on the gateway's own port) or `evolution`.
        public var mode = UpstreamMode.simulator
        /// Evolution API base URL, e.g. https://evo.example.com (env EVOLUTION_API_BASE_URL).
        public var baseURL = ""
        /// Evolution's global API key (env EVOLUTION_API_KEY). Never logged.
        public var apiKey = ""
        /// Most upstream requests in flight at once. With `adaptiveConcurrency` the gateway starts at 16
        /// and moves between 4 and this with the upstream's answers (see AdaptiveLimit); without, it is fixed.
        public var concurrency = 256
        /// Adapt the requests in flight to the upstream's latency and overload answers (429, 502–504, timeouts).
        public var adaptiveConcurrency = true
        public var timeoutSeconds = 8.0
        /// Upstream bodies over this size are refused.
        public var maxResponseBytes = 512 * 1024
        /// When set, keys come from this OAuth-style token endpoint ({access_token, expires_in}).
        public var tokenURL = ""
        public var tokenClientId = ""
        public var tokenClientSecret = ""
        /// Shared secret for POST /webhooks/evolution (header `x-webhook-secret` or `?secret=`);
        /// the envelope's `apikey` matching upstream.apiKey is accepted too.
        public var webhookSecret = ""
    }

    /// The built-in Evolution API look-alike.
    public struct Simulator: Codable, Sendable, Equatable {
        /// Global key the simulator accepts (like Evolution's AUTHENTICATION_API_KEY).
        public var apiKey = "qrgate-simulator-key"
        public var firstQrSeconds = 60.0
        public var nextQrSeconds = 20.0
        /// How long the first pairing code of an instance connected with a phone number stays valid
        /// (then codes rotate with the QRs, every `nextQrSeconds`).
        public var pairingFirstSeconds = 60.0
        /// QR refs per connection attempt before WhatsApp gives up (state `close`).
        public var maxRefs = 6
        /// Whether the simulator sends Evolution-style webhooks (QR rotations, link state) at all.
        public var webhooks = true
        /// Where they go. Empty: the gateway's own `/webhooks/evolution` when the simulator runs inside
        /// it (`qrgate serve`), nowhere when it runs alone (`qrgate simulate`).
        public var webhookURL = ""
        /// Whether `qrcode.updated` webhooks carry the QR's PNG (`data.qrcode.base64`), as Evolution's do:
        /// `always`, `never`, or `auto`: yes for `qrgate simulate`, no when the simulator runs inside the
        /// gateway, which draws the same picture from the code with the same renderer when someone wants it
        /// (drawing every rotation of a fleet nobody watches was most of an idle gateway's CPU).
        public var webhookPictures = "auto"
        /// Lifetime of tokens from POST /oauth/token.
        public var tokenTTLSeconds = 3600
        /// Client credentials POST /oauth/token accepts.
        public var tokenClientId = "qrgate"
        public var tokenClientSecret = "qrgate-simulator-secret"
    }

    /// The listening side and its limits.
    public struct Server: Codable, Sendable, Equatable {
        /// Largest WebSocket message accepted; bigger closes with 1009.
        public var maxMessageBytes = 65536
        /// Largest HTTP request body accepted; bigger answers 413.
        public var maxBodyBytes = 1 << 20
        /// Unsent bytes one peer may hold for `slowConsumerSeconds` before it is closed (4008); past four
        /// times this it is closed at once. 4 MiB is about 350 full QR frames or 20 000 countdowns: a
        /// firehose reader of thousands of sessions getting its snapshots stays well under it (they are
        /// paced by what it reads), while a page's single session never comes near.
        public var outboxBytes = 4 << 20
        /// How long a peer may stay over `outboxBytes` (a mobile network stall, a GC pause) before it is
        /// closed. Behind, it still gets the newest countdown and QR of each session, not a backlog.
        public var slowConsumerSeconds = 10.0
        /// Sessions one connection may subscribe to one by one or in lists ("*" and a prefix count as one).
        public var maxSubscriptionsPerConnection = 10_000
        /// Idle WebSocket peers are pinged after this many seconds and dropped after twice that.
        public var pingIntervalSeconds = 30
        /// How long a connection may take to finish its WebSocket handshake or to send its HTTP request's
        /// headers and body before it is dropped (an answer the gateway gives later is not held to it).
        public var handshakeTimeoutSeconds = 10
        /// Browser origins (`https://app.example.com`) allowed to open a WebSocket and to call the REST API
        /// and load `qrgate.js` across origins (CORS); empty allows any origin on the WebSocket and none
        /// across origins over HTTP (same-origin pages only).
        public var allowedOrigins: [String] = []
        /// Who may frame the served pages (CSP `frame-ancestors`): `'self'`, `'none'`, or origins.
        public var frameAncestors = "'self'"
        /// PEM certificate and key: both set serves https:// and wss://.
        public var tlsCert = ""
        public var tlsKey = ""
        /// WebSocket messages per second one connection may send (burst: twice that); over → close 4029.
        public var messagesPerSecond = 20
        /// Open WebSockets from one IP address; more are refused at the handshake.
        public var maxConnectionsPerIP = 1000
        /// libwebsockets loops (threads), each owning the connections the kernel hands its listening socket;
        /// 0 = one per core. Sessions, timers and upstream work stay on the first; delivery spreads.
        public var loops = 0
        /// How each loop waits for its sockets: `libev` (epoll on Linux, through Debian's
        /// libwebsockets-evlib-ev) or `poll` (lws's own loop, `poll(2)` over every descriptor). Since frames
        /// are written at once (no POLLOUT toggled per frame) libev measures faster: a third less CPU per
        /// delivered frame, a quicker set-up, lower countdown latency (Benchmarks/results/NOTES.md).
        public var eventLoop: EventLoopKind = .libev
        /// Serves an echo endpoint at /ws/echo, for WebSocket conformance runs (Autobahn). Off in production.
        public var conformanceEcho = false
    }

    /// The number of loops `server.loops` asks for on this machine.
    public var effectiveLoops: Int { server.loops > 0 ? server.loops : max(1, ProcessInfo.processInfo.activeProcessorCount) }

    /// QR lifetime and how it is drawn.
    public struct QR: Codable, Sendable, Equatable {
        public var ttlSeconds = 60
        /// At a QR's expiry the upstream is asked once more for its current code, and its answer waited for
        /// at most this long: a code rotated just then is shown instead of regenerating (0: expire at once).
        public var expiryCheckSeconds = 3.0
        public var maxAttempts = 3
        public var countdownIntervalSeconds = 1
        /// L, M, Q or H.
        public var errorCorrection = "M"
        public var quietZone = 4
        public var moduleSize = 6
        /// Longest text `GET /api/v1/qr` renders.
        public var maxTextBytes = 1024
    }

    public struct Log: Codable, Sendable, Equatable {
        /// trace, debug, info, notice, warning, error, critical
        public var level = "info"
    }

    /// Checks what types alone cannot: ranges and enumerations. Throws naming the key.
    public func validate() throws(ConfigError) {
        func positive(_ v: Int, _ key: String) throws(ConfigError) {
            if v <= 0 { throw .invalid(key: key, reason: "must be greater than 0, got \(v)") }
        }
        try positive(server.maxMessageBytes, "server.maxMessageBytes")
        try positive(server.maxBodyBytes, "server.maxBodyBytes")
        if server.outboxBytes < 16 * 1024 { throw .invalid(key: "server.outboxBytes", reason: "must be at least 16384, got \(server.outboxBytes)") }
        if !(server.slowConsumerSeconds > 0 && server.slowConsumerSeconds <= 3600) {
            throw .invalid(key: "server.slowConsumerSeconds", reason: "must be in (0, 3600], got \(server.slowConsumerSeconds)")
        }
        try positive(server.maxSubscriptionsPerConnection, "server.maxSubscriptionsPerConnection")
        guard (1...3600).contains(server.pingIntervalSeconds) else {
            throw .invalid(key: "server.pingIntervalSeconds", reason: "must be 1 to 3600, got \(server.pingIntervalSeconds)")
        }
        guard (1...300).contains(server.handshakeTimeoutSeconds) else {
            throw .invalid(key: "server.handshakeTimeoutSeconds", reason: "must be 1 to 300, got \(server.handshakeTimeoutSeconds)")
        }
        guard (0...64).contains(server.loops) else {
            throw .invalid(key: "server.loops", reason: "must be 0 (one per core) to 64, got \(server.loops)")
        }
        if server.tlsCert.isEmpty != server.tlsKey.isEmpty {
            throw .invalid(key: server.tlsCert.isEmpty ? "server.tlsCert" : "server.tlsKey", reason: "TLS needs both tlsCert and tlsKey")
        }
        try positive(server.messagesPerSecond, "server.messagesPerSecond")
        try positive(server.maxConnectionsPerIP, "server.maxConnectionsPerIP")
        try positive(auth.browserTokenTTLSeconds, "auth.browserTokenTTLSeconds")
        for (list, keys) in [("auth.serviceKeys", auth.serviceKeys), ("auth.adminKeys", auth.adminKeys)] {
            for (i, entry) in keys.enumerated() {
                if let p = entry.prefix, !ClientMessage.isValidSessionID(p) {
                    throw .invalid(key: "\(list)[\(i)].prefix", reason: "must be 1–128 characters of A–Z a–z 0–9 . _ : @ -")
                }
            }
        }
        for (i, k) in (auth.serviceKeys + auth.adminKeys).map(\.key).enumerated() {
            if k.hasPrefix("sha256:") {
                let hex = k.dropFirst(7)
                if hex.count != 64 || !hex.allSatisfy(\.isHexDigit) { throw .invalid(key: "auth keys[\(i)]", reason: "sha256: must be followed by 64 hex digits") }
            } else if k.count < 16 {
                throw .invalid(key: "auth keys[\(i)]", reason: "API keys must be at least 16 characters")
            }
        }
        if !auth.tokenSecret.isEmpty && auth.tokenSecret.utf8.count < 32 { throw .invalid(key: "auth.tokenSecret", reason: "must be at least 32 bytes") }
        let sb = auth.supabase
        if !sb.jwtSecret.isEmpty && sb.jwtSecret.utf8.count < 32 {
            throw .invalid(key: "auth.supabase.jwtSecret", reason: "must be at least 32 bytes (Supabase's JWT secrets are 40 or more)")
        }
        let claimPath = sb.sessionsClaim.split(separator: ".", omittingEmptySubsequences: false)
        if claimPath.isEmpty || claimPath.count > 8 || claimPath.contains(where: { $0.isEmpty || $0.count > 64 }) {
            throw .invalid(key: "auth.supabase.sessionsClaim", reason: "must be a dotted path of 1–8 claim names, e.g. app_metadata.qrgate_sessions")
        }
        if sb.audiences.contains(where: \.isEmpty) { throw .invalid(key: "auth.supabase.audiences", reason: "entries must not be empty") }
        try positive(qr.ttlSeconds, "qr.ttlSeconds")
        if !(0...60).contains(qr.expiryCheckSeconds) {
            throw .invalid(key: "qr.expiryCheckSeconds", reason: "must be 0…60, got \(qr.expiryCheckSeconds)")
        }
        try positive(qr.maxAttempts, "qr.maxAttempts")
        try positive(qr.countdownIntervalSeconds, "qr.countdownIntervalSeconds")
        if !["L", "M", "Q", "H"].contains(qr.errorCorrection) {
            throw .invalid(key: "qr.errorCorrection", reason: "must be one of L, M, Q, H; got \"\(qr.errorCorrection)\"")
        }
        if !(0...20).contains(qr.quietZone) { throw .invalid(key: "qr.quietZone", reason: "must be 0…20, got \(qr.quietZone)") }
        if !(1...40).contains(qr.moduleSize) { throw .invalid(key: "qr.moduleSize", reason: "must be 1…40, got \(qr.moduleSize)") }
        if !(1...2953).contains(qr.maxTextBytes) { throw .invalid(key: "qr.maxTextBytes", reason: "must be 1…2953, got \(qr.maxTextBytes)") }
        if upstream.mode == .evolution {
            if upstream.baseURL.isEmpty { throw .invalid(key: "upstream.baseURL", reason: "is required when upstream.mode is evolution") }
            if upstream.apiKey.isEmpty && upstream.tokenURL.isEmpty {
                throw .invalid(key: "upstream.apiKey", reason: "is required when upstream.mode is evolution (or set upstream.tokenURL)")
            }
        }
        if !upstream.baseURL.isEmpty && !(upstream.baseURL.hasPrefix("http://") || upstream.baseURL.hasPrefix("https://")) {
            throw .invalid(key: "upstream.baseURL", reason: "must start with http:// or https://")
        }
        if !(1...1024).contains(upstream.concurrency) { throw .invalid(key: "upstream.concurrency", reason: "must be 1…1024, got \(upstream.concurrency)") }
        if !(upstream.timeoutSeconds > 0 && upstream.timeoutSeconds <= 300) { throw .invalid(key: "upstream.timeoutSeconds", reason: "must be in (0, 300]") }
        try positive(upstream.maxResponseBytes, "upstream.maxResponseBytes")
        if !(simulator.firstQrSeconds > 0) { throw .invalid(key: "simulator.firstQrSeconds", reason: "must be greater than 0") }
        if !(simulator.nextQrSeconds > 0) { throw .invalid(key: "simulator.nextQrSeconds", reason: "must be greater than 0") }
        for (i, o) in server.allowedOrigins.enumerated() {
            guard let u = URL(string: o), let scheme = u.scheme, ["http", "https"].contains(scheme), let host = u.host,
                  host == host.lowercased(), scheme == scheme.lowercased(), u.path.isEmpty, u.query == nil, u.fragment == nil,
                  u.user == nil, !o.hasSuffix("/") else {
                throw .invalid(key: "server.allowedOrigins[\(i)]", reason: "must be an origin like https://app.example.com (scheme, host, optional port; no path)")
            }
        }
        if server.frameAncestors.isEmpty || server.frameAncestors.utf8.count > 512
            || server.frameAncestors.contains(where: { $0 == ";" || $0 == "," || $0.isNewline }) {
            throw .invalid(key: "server.frameAncestors", reason: "must be a CSP source list such as 'self', 'none' or https://portal.example.com")
        }
        if !(simulator.pairingFirstSeconds > 0) { throw .invalid(key: "simulator.pairingFirstSeconds", reason: "must be greater than 0") }
        try positive(simulator.maxRefs, "simulator.maxRefs")
        if !["auto", "always", "never"].contains(simulator.webhookPictures) {
            throw .invalid(key: "simulator.webhookPictures", reason: "must be auto, always or never")
        }
        try positive(simulator.tokenTTLSeconds, "simulator.tokenTTLSeconds")
        if !(poll.intervalSeconds > 0) { throw .invalid(key: "poll.intervalSeconds", reason: "must be greater than 0") }
        if !(poll.connectedIntervalSeconds > 0) { throw .invalid(key: "poll.connectedIntervalSeconds", reason: "must be greater than 0") }
        if !(poll.afterWebhookSeconds > 0) { throw .invalid(key: "poll.afterWebhookSeconds", reason: "must be greater than 0") }
        if !(poll.backoffMaxSeconds > 0) { throw .invalid(key: "poll.backoffMaxSeconds", reason: "must be greater than 0") }
        if !(refresh.cycleSeconds > 0) { throw .invalid(key: "refresh.cycleSeconds", reason: "must be greater than 0") }
        if !(refresh.minIntervalSeconds >= 0) { throw .invalid(key: "refresh.minIntervalSeconds", reason: "must be 0 or more") }
        try positive(events.logCapacity, "events.logCapacity")
        if events.maxBytesPerSession < 16 * 1024 {
            throw .invalid(key: "events.maxBytesPerSession", reason: "must be at least 16384 (one QR frame is about 12 KB), got \(events.maxBytesPerSession)")
        }
        if !(events.maxAgeSeconds > 0) { throw .invalid(key: "events.maxAgeSeconds", reason: "must be greater than 0") }
        if store.mode == .sqlite && store.path.isEmpty { throw .invalid(key: "store.path", reason: "is required when store.mode is sqlite") }
        if store.mode == .postgres {
            if store.url.isEmpty { throw .invalid(key: "store.url", reason: "is required when store.mode is postgres (or set DATABASE_URL)") }
            if let why = Self.postgresURLProblem(store.url) { throw .invalid(key: "store.url", reason: why) }
        }
        if !(cluster.leaseSeconds >= 1 && cluster.leaseSeconds <= 600) {
            throw .invalid(key: "cluster.leaseSeconds", reason: "must be between 1 and 600, got \(cluster.leaseSeconds)")
        }
        if !(cluster.orderTimeoutSeconds > 0 && cluster.orderTimeoutSeconds <= 120) {
            throw .invalid(key: "cluster.orderTimeoutSeconds", reason: "must be greater than 0 and at most 120")
        }
        if !cluster.nodeId.isEmpty, cluster.nodeId.count > 64 || !ClientMessage.isValidSessionID(cluster.nodeId) {
            throw .invalid(key: "cluster.nodeId", reason: "must be 1–64 characters of A–Z a–z 0–9 . _ : @ -")
        }
        if !store.sealKey.isEmpty, Data(base64Encoded: store.sealKey)?.count != 32 {
            throw .invalid(key: "store.sealKey", reason: "must be the base64 of 32 bytes (openssl rand -base64 32)")
        }
        for (i, seed) in sessions.enumerated() {
            if !ClientMessage.isValidSessionID(seed.sessionId) { throw .invalid(key: "sessions[\(i)].sessionId", reason: "must be 1–128 characters of A–Z a–z 0–9 . _ : @ -") }
            if let n = seed.instanceName, !ClientMessage.isValidSessionID(n) { throw .invalid(key: "sessions[\(i)].instanceName", reason: "has characters an instance name cannot carry") }
        }
        if !demoSession.isEmpty && !ClientMessage.isValidSessionID(demoSession) { throw .invalid(key: "demoSession", reason: "is not a valid session id") }
        let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
        if !levels.contains(log.level) {
            throw .invalid(key: "log.level", reason: "must be one of \(levels.joined(separator: ", ")); got \"\(log.level)\"")
        }
    }
}

/// Why a configuration was refused; always names the key.
public enum ConfigError: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)
    case unknownKey(String)
    case wrongType(key: String, expected: String)
    case invalid(key: String, reason: String)
    case badEnvironment(variable: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): "cannot read config file \(path): \(reason)"
        case let .malformed(path, reason): "config file \(path) is not valid JSON: \(reason)"
        case let .unknownKey(key): "unknown configuration key \"\(key)\""
        case let .wrongType(key, expected): "configuration key \"\(key)\" must be \(expected)"
        case let .invalid(key, reason): "configuration key \"\(key)\" \(reason)"
        case let .badEnvironment(variable, reason): "environment variable \(variable): \(reason)"
        }
    }
}

/// Where QR codes come from (`upstream.mode`).
public enum UpstreamMode: String, Sendable, CaseIterable, ConfigChoice { case simulator, evolution }

/// How the libwebsockets loops wait for their sockets (`server.eventLoop`).
public enum EventLoopKind: String, Sendable, CaseIterable, ConfigChoice { case poll, libev }

/// Where sessions are kept (`store.mode`).
public enum StoreMode: String, Sendable, CaseIterable, ConfigChoice { case sqlite, postgres, memory }

extension Config {
    /// Why a `store.url` cannot be a PostgreSQL address, or nil when it can.
    public static func postgresURLProblem(_ url: String) -> String? {
        guard let c = URLComponents(string: url) else { return "is not a URL" }
        guard ["postgres", "postgresql"].contains(c.scheme ?? "") else { return "must start with postgres:// (got \(c.scheme.map { "\($0)://" } ?? "no scheme"))" }
        guard let host = c.host, !host.isEmpty else { return "names no host" }
        if let mode = c.queryItems?.last(where: { $0.name == "sslmode" })?.value, !["disable", "prefer", "require"].contains(mode) {
            return "sslmode must be disable, prefer or require (got \(mode))"
        }
        return nil
    }
}

/// A configuration value that is one of a few words; any other word stops start-up naming the choices.
public protocol ConfigChoice: RawRepresentable, CaseIterable, Codable where RawValue == String {}

extension ConfigChoice {
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let word = try c.decode(String.self)
        guard let value = Self(rawValue: word) else {
            let choices = Self.allCases.map(\.rawValue).joined(separator: " or ")
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "must be \(choices); got \"\(word.prefix(40))\"")
        }
        self = value
    }
}
