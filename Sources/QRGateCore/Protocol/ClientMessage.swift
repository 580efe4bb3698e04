/// A request a WebSocket peer sends (docs/PROTOCOL.md, "Client → server").
public enum ClientMessage: Equatable, Sendable {
    case ping
    case subscribe(session: String, token: String?, since: Int?, formats: QRFormats?)
    case unsubscribe(session: String)
    case refresh(session: String)
}

/// A request the gateway refuses, answered with an `error` frame.
public struct ProtocolError: Error, Equatable, Sendable {
    public let code: ErrorCode
    public let reason: String
    public init(_ code: ErrorCode, _ reason: String) { self.code = code; self.reason = reason }
}

/// Machine-readable error codes of `error` frames.
public enum ErrorCode: String, Sendable, CaseIterable {
    case invalidJSON = "invalid_json"
    case invalidMessage = "invalid_message"
    case unknownOp = "unknown_op"
    case binaryUnsupported = "binary_unsupported"
    case unknownSession = "unknown_session"
    case unauthorized = "unauthorized"
    case forbidden = "forbidden"
    case rateLimited = "rate_limited"
    case notSubscribed = "not_subscribed"
    case tooManySubscriptions = "too_many_subscriptions"
    case upstreamFailed = "upstream_failed"
}

extension ClientMessage {
    /// Longest session id accepted; ids are printable ASCII without spaces.
    public static let maxSessionIDLength = 128
    /// Deepest JSON nesting accepted in a client message.
    public static let maxDepth = 8

    /// Parses one text frame, checking every field; never throws anything but `ProtocolError`.
    public static func parse(_ bytes: [UInt8]) throws(ProtocolError) -> ClientMessage {
        guard let json = JSONValue.parse(bytes) else {
            throw ProtocolError(.invalidJSON, "message is not valid JSON")
        }
        guard json.depth <= maxDepth else { throw ProtocolError(.invalidMessage, "message nests deeper than \(maxDepth) levels") }
        guard case let .object(o) = json else { throw ProtocolError(.invalidMessage, "message must be a JSON object") }
        guard let opValue = o["op"] else { throw ProtocolError(.invalidMessage, "missing \"op\"") }
        guard case let .string(op) = opValue else { throw ProtocolError(.invalidMessage, "\"op\" must be a string") }
        func allow(_ keys: Set<String>) throws(ProtocolError) {
            if let extra = o.keys.sorted().first(where: { !keys.contains($0) && $0 != "op" && $0 != "id" }) {
                throw ProtocolError(.invalidMessage, "unknown field \"\(extra.prefix(40))\" for op \"\(op)\"")
            }
        }
        func session() throws(ProtocolError) -> String {
            guard let v = o["session"] else { throw ProtocolError(.invalidMessage, "missing \"session\"") }
            guard case let .string(s) = v else { throw ProtocolError(.invalidMessage, "\"session\" must be a string") }
            guard isValidSessionID(s) || s == "*" else {
                throw ProtocolError(.invalidMessage, "\"session\" must be 1–\(maxSessionIDLength) characters of A–Z a–z 0–9 . _ : @ -")
            }
            return s
        }
        switch op {
        case "ping":
            try allow([])
            return .ping
        case "subscribe":
            try allow(["session", "token", "since", "formats"])
            let s = try session()
            var token: String?
            if let t = o["token"] {
                switch t {
                case let .string(v): token = v
                case .null: token = nil
                default: throw ProtocolError(.invalidMessage, "\"token\" must be a string")
                }
            }
            var since: Int?
            if let v = o["since"] {
                switch v {
                case let .int(i) where i >= 0: since = i
                case .null: since = nil
                default: throw ProtocolError(.invalidMessage, "\"since\" must be a non-negative integer")
                }
            }
            var formats: QRFormats?
            if let v = o["formats"] {
                switch v {
                case .null: formats = nil
                case let .array(items):
                    guard items.count <= 8 else { throw ProtocolError(.invalidMessage, "\"formats\" lists at most 8 names") }
                    var names: [String] = []
                    for item in items {
                        guard case let .string(n) = item else { throw ProtocolError(.invalidMessage, "\"formats\" must be an array of strings: code, svg, png") }
                        names.append(n)
                    }
                    formats = try QRFormats(parsing: names)
                default:
                    throw ProtocolError(.invalidMessage, "\"formats\" must be an array of strings: code, svg, png")
                }
            }
            return .subscribe(session: s, token: token, since: since, formats: formats)
        case "unsubscribe":
            try allow(["session"])
            return .unsubscribe(session: try session())
        case "refresh":
            try allow(["session"])
            let s = try session()
            guard s != "*" else { throw ProtocolError(.invalidMessage, "refresh needs one session, not \"*\"") }
            return .refresh(session: s)
        default:
            throw ProtocolError(.unknownOp, "unknown op \"\(op.prefix(40))\"; expected ping, subscribe, unsubscribe or refresh")
        }
    }

    /// Session ids: what instance names and database keys can safely carry.
    public static func isValidSessionID(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= maxSessionIDLength else { return false }
        return s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || c == 0x2E || c == 0x5F || c == 0x3A || c == 0x40 || c == 0x2D
        }
    }
}
