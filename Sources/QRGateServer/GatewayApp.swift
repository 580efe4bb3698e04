import Foundation
import Logging
import QRGateCore
import QRGateHTTP
import QRGatePostgres
import QRGateStore
import QRGateUpstream
import Synchronization

/// Wires configuration, the libwebsockets server and the gateway together; what `qrgate serve` runs
/// and what integration tests start in-process. Sendable by its parts: the server (a thin C wrapper),
/// the gateway (an actor on the server's loop), and thread-safe services.
public final class GatewayApp: Sendable {
    public let server: LWSServer
    public let gateway: Gateway
    public let logger: Logger
    public let config: Config
    /// libcurl's multi thread, shared by the upstream client, webhooks and credentials.
    public let http: CurlMulti
    public let credentials: UpstreamCredentials
    public let store: SessionStore
    /// Set with `store.mode = postgres`: leases, the bus and orders between nodes.
    public let cluster: (any SessionCluster)?
    public let metrics = GatewayMetrics()
    /// What the store held at start, handed to the gateway once by `start()`.
    private let restoring: Mutex<[(StoredSession, [StoredEvent])]?>

    public init(config: Config, host: String, port: Int, staticDir: String, logger: Logger) async throws {
        self.logger = logger
        self.config = config
        let loopback = host == "127.0.0.1" || host == "localhost" || host == "::1"
        // Keys are resolved once here; verifying a token later is synchronous, on the loop that needs it.
        let auth = try await Authenticator(config: config.auth)
        if !auth.hasKeys && !loopback {
            throw GatewayAppError.openOnNetwork(host: host)
        }
        http = CurlMulti(maxConcurrent: config.upstream.concurrency, adaptive: config.upstream.adaptiveConcurrency,
                         slowSeconds: config.upstream.timeoutSeconds / 2)
        let simulated = config.upstream.mode == .simulator
        credentials = UpstreamCredentials(
            staticKey: config.upstream.apiKey.isEmpty && simulated ? config.simulator.apiKey : config.upstream.apiKey,
            tokenURL: config.upstream.tokenURL, clientId: config.upstream.tokenClientId,
            clientSecret: config.upstream.tokenClientSecret, timeoutSeconds: config.upstream.timeoutSeconds, http: http)
        let files = try StaticFiles(directory: staticDir)
        var cluster: (any SessionCluster)?
        switch config.store.mode {
        case .sqlite:
            store = try SQLiteStore(path: config.store.path, eventCapacity: config.events.logCapacity, eventMaxAgeSeconds: config.events.maxAgeSeconds,
                                    eventMaxBytes: config.events.maxBytesPerSession)
            logger.info("store: SQLite at \(config.store.path)")
        case .postgres:
            store = try await PostgresStore.open(url: config.store.url, sealKey: config.store.sealKey, eventCapacity: config.events.logCapacity,
                                                 eventMaxAgeSeconds: config.events.maxAgeSeconds, eventMaxBytes: config.events.maxBytesPerSession,
                                                 nodeId: config.cluster.nodeId.isEmpty ? PostgresStore.defaultNodeId() : config.cluster.nodeId,
                                                 leaseSeconds: config.cluster.leaseSeconds, logger: logger)
            cluster = PostgresCluster(store: store as! PostgresStore, leaseSeconds: config.cluster.leaseSeconds, logger: logger)
            logger.info("store: PostgreSQL at \(PostgresStore.masked(config.store.url))")
        case .memory:
            store = MemoryStore(eventCapacity: config.events.logCapacity)
            logger.notice("store: memory only (store.mode = memory): sessions end with the process")
        }
        self.cluster = cluster
        restoring = Mutex(try await store.loadAll())
        var options = LWSServerOptions(
            host: host, port: port,
            maxMessageBytes: config.server.maxMessageBytes, maxBodyBytes: config.server.maxBodyBytes,
            outboxBytes: config.server.outboxBytes, slowConsumerSeconds: config.server.slowConsumerSeconds, pingIntervalSeconds: config.server.pingIntervalSeconds,
            handshakeTimeoutSeconds: config.server.handshakeTimeoutSeconds,
            tlsCertPath: config.server.tlsCert.isEmpty ? nil : config.server.tlsCert,
            tlsKeyPath: config.server.tlsKey.isEmpty ? nil : config.server.tlsKey, loops: config.effectiveLoops, eventLoop: config.server.eventLoop)
        options.responseHeaders = SecurityHeaders.all(frameAncestors: config.server.frameAncestors, tls: !config.server.tlsCert.isEmpty)
        options.corsOrigins = Set(config.server.allowedOrigins)
        server = LWSServer(options: options, logger: logger)
        gateway = Gateway(config: config, server: server, staticFiles: files, http: http, demoMode: !auth.hasKeys,
                          auth: auth, credentials: credentials, store: store, cluster: cluster, metrics: metrics, logger: logger)
        if !auth.hasKeys {
            logger.warning("DEMO MODE: no auth keys configured (auth.serviceKeys, auth.adminKeys) on a loopback bind: every client is admin")
        }
        if auth.ephemeralSecret && auth.hasKeys {
            logger.notice("auth.tokenSecret is empty: browser tokens are signed with a random per-process key and end with a restart")
        }
        if auth.acceptsSupabaseTokens {
            let s = config.auth.supabase
            logger.info("Supabase tokens accepted: HS256 \(s.jwtSecret.isEmpty ? "off" : "with secret \(Secret.mask(s.jwtSecret))"), JWKS kids [\(auth.supabaseKeyIDs.joined(separator: ", "))], sessions from \(s.sessionsClaim)")
        }
    }

    /// Starts listening; returns the bound port. The stored and configured sessions start on the loop.
    public func start() throws -> Int {
        let port = try server.start()
        let base = config.upstream.mode == .simulator && config.upstream.baseURL.isEmpty
            ? "http://127.0.0.1:\(port)" : config.upstream.baseURL
        let metrics = metrics
        let upstream = EvolutionClient(baseURL: base, credentials: credentials, http: http,
                                       timeoutSeconds: config.upstream.timeoutSeconds, maxResponseBytes: config.upstream.maxResponseBytes,
                                       observe: { op, outcome, seconds in
                                           metrics.count("qrgate_upstream_requests_total", [("operation", op), ("outcome", outcome)])
                                           metrics.time("qrgate_upstream_request_duration_seconds", [("operation", op)], seconds: seconds)
                                       })
        logger.info("upstream \(config.upstream.mode.rawValue) at \(base), key \(Secret.mask(config.upstream.apiKey))")
        let stored = restoring.withLock { r in defer { r = nil }; return r ?? [] }
        // Started on the loop itself (no hop through the global pool, which a synchronous caller may hold).
        let gateway = gateway
        Task(executorPreference: server.executor) {
            await gateway.begin(upstream: upstream, restoring: stored, ownWebhookURL: "http://127.0.0.1:\(port)/webhooks/evolution")
        }
        return port
    }

    public func stop() {
        if let cluster {
            // A clean stop hands the leases back: other nodes take the sessions at their next round, not after a lapse.
            let done = DispatchSemaphore(value: 0)
            Task.detached {
                await cluster.releaseAll()
                done.signal()
            }
            _ = done.wait(timeout: .now() + 3)
            cluster.stop()
        }
        server.stop()
        http.shutdown()
        store.close()
    }
    public func waitUntilStopped() { server.waitUntilStopped() }
}

/// Start-up refusals.
public enum GatewayAppError: Error, CustomStringConvertible {
    case openOnNetwork(host: String)
    public var description: String {
        switch self {
        case let .openOnNetwork(host):
            "refusing to listen on \(host) with no API keys: set auth.adminKeys / auth.serviceKeys, or bind 127.0.0.1 for the open demo"
        }
    }
}
