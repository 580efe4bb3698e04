import Foundation

/// The whole configuration: `Config/qrgate.json` with `QRGATE_*` environment overrides.
/// Every key has a default, so an empty file is a valid configuration.
public struct Config: Codable, Sendable, Equatable {
    public var server = Server()
    public var qr = QR()
    public var log = Log()

    public init() {}

    /// The listening side and its limits.
    public struct Server: Codable, Sendable, Equatable {
        /// Largest WebSocket message accepted; bigger closes with 1009.
        public var maxMessageBytes = 65536
        /// Largest HTTP request body accepted; bigger answers 413.
        public var maxBodyBytes = 1 << 20
        /// Frames waiting for one slow peer before it is closed (4008).
        public var outboxLimit = 64
        /// Idle WebSocket peers are pinged after this many seconds and dropped after twice that.
        public var pingIntervalSeconds = 30
        /// Browser origins allowed to open a WebSocket; empty allows any.
        public var allowedOrigins: [String] = []
        /// PEM certificate and key: both set serves https:// and wss://.
        public var tlsCert = ""
        public var tlsKey = ""
        /// Serves an echo endpoint at /ws/echo, for WebSocket conformance runs (Autobahn). Off in production.
        public var conformanceEcho = false
    }

    /// QR lifetime and how it is drawn.
    public struct QR: Codable, Sendable, Equatable {
        public var ttlSeconds = 60
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
        try positive(server.outboxLimit, "server.outboxLimit")
        try positive(server.pingIntervalSeconds, "server.pingIntervalSeconds")
        if server.tlsCert.isEmpty != server.tlsKey.isEmpty {
            throw .invalid(key: server.tlsCert.isEmpty ? "server.tlsCert" : "server.tlsKey", reason: "TLS needs both tlsCert and tlsKey")
        }
        try positive(qr.ttlSeconds, "qr.ttlSeconds")
        try positive(qr.maxAttempts, "qr.maxAttempts")
        try positive(qr.countdownIntervalSeconds, "qr.countdownIntervalSeconds")
        if !["L", "M", "Q", "H"].contains(qr.errorCorrection) {
            throw .invalid(key: "qr.errorCorrection", reason: "must be one of L, M, Q, H; got \"\(qr.errorCorrection)\"")
        }
        if !(0...20).contains(qr.quietZone) { throw .invalid(key: "qr.quietZone", reason: "must be 0…20, got \(qr.quietZone)") }
        if !(1...40).contains(qr.moduleSize) { throw .invalid(key: "qr.moduleSize", reason: "must be 1…40, got \(qr.moduleSize)") }
        if !(1...2953).contains(qr.maxTextBytes) { throw .invalid(key: "qr.maxTextBytes", reason: "must be 1…2953, got \(qr.maxTextBytes)") }
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
