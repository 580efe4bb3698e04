/// A request a WebSocket peer sends (docs/PROTOCOL.md, "Client → server").
public enum ClientMessage: Equatable, Sendable {
    case ping
    case subscribe(SessionSelector, token: String?, since: Since?, formats: QRFormats?)
    case unsubscribe(SessionSelector)
    case refresh(session: String)
    /// Link by phone number: the session's next QRs come with a pairing code (`phoneNumber`: validated digits).
    case pair(session: String, phoneNumber: String)
}

/// Which sessions a subscription covers.
public enum SessionSelector: Equatable, Sendable, Hashable {
    /// `"session": "id"`: one session (frames as they are, a `snapshot` first).
    case one(String)
    /// `"session": "*"`: every session the credentials see.
    case all
    /// `"sessions": [ids]`.
    case list([String])
    /// `"prefix": "shop-"`: every session whose id starts so, now or later.
    case prefix(String)

    /// Firehose selectors get their snapshots as a paced stream of `snapshots` batches.
    public var isStream: Bool { if case .one = self { false } else { true } }
}

/// Where a resubscribing client stands: the last seq it has of one session, or of each session.
public enum Since: Equatable, Sendable {
    case seq(Int)
    case map([String: Int])
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
    /// The node cannot carry the request out now (in a cluster: the session's node did not answer); try again.
    case unavailable = "unavailable"
}

extension ClientMessage {
    /// Longest session id accepted; ids are printable ASCII without spaces.
    public static let maxSessionIDLength = 128
    /// Most ids in one `sessions` list or `since` map (a message stays under `server.maxMessageBytes` too).
    public static let maxListLength = 10_000
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
        func validID(_ s: String, _ what: String) throws(ProtocolError) {
            guard isValidSessionID(s) else {
                throw ProtocolError(.invalidMessage, "\(what) must be 1–\(maxSessionIDLength) characters of A–Z a–z 0–9 . _ : @ -")
            }
        }
        func session() throws(ProtocolError) -> String {
            guard let v = o["session"] else { throw ProtocolError(.invalidMessage, "missing \"session\"") }
            guard case let .string(s) = v else { throw ProtocolError(.invalidMessage, "\"session\" must be a string") }
            if s != "*" { try validID(s, "\"session\"") }
            return s
        }
        /// Exactly one of `session`, `sessions` and `prefix`.
        func selector() throws(ProtocolError) -> SessionSelector {
            let given = ["session", "sessions", "prefix"].filter { o[$0] != nil }
            guard given.count == 1 else {
                throw ProtocolError(.invalidMessage, given.isEmpty ? "missing \"session\" (or \"sessions\", or \"prefix\")"
                                                                   : "give one of \"session\", \"sessions\" and \"prefix\", not several")
            }
            switch given[0] {
            case "session":
                let s = try session()
                return s == "*" ? .all : .one(s)
            case "sessions":
                guard case let .array(items) = o["sessions"]! else { throw ProtocolError(.invalidMessage, "\"sessions\" must be an array of session ids") }
                guard !items.isEmpty else { throw ProtocolError(.invalidMessage, "\"sessions\" is empty") }
                guard items.count <= maxListLength else { throw ProtocolError(.invalidMessage, "\"sessions\" lists at most \(maxListLength) ids") }
                var ids: [String] = [], seen = Set<String>()
                for item in items {
                    guard case let .string(id) = item else { throw ProtocolError(.invalidMessage, "\"sessions\" must be an array of session ids") }
                    try validID(id, "each of \"sessions\"")
                    if seen.insert(id).inserted { ids.append(id) }
                }
                return .list(ids)
            default:
                guard case let .string(p) = o["prefix"]! else { throw ProtocolError(.invalidMessage, "\"prefix\" must be a string") }
                try validID(p, "\"prefix\"")
                return .prefix(p)
            }
        }
        switch op {
        case "ping":
            try allow([])
            return .ping
        case "subscribe":
            try allow(["session", "sessions", "prefix", "token", "since", "formats"])
            let selector = try selector()
            var token: String?
            if let t = o["token"] {
                switch t {
                case let .string(v): token = v
                case .null: token = nil
                default: throw ProtocolError(.invalidMessage, "\"token\" must be a string")
                }
            }
            var since: Since?
            if let v = o["since"] {
                switch v {
                case let .int(i) where i >= 0:
                    guard case .one = selector else {
                        throw ProtocolError(.invalidMessage, "\"since\" for several sessions is an object of session id → seq")
                    }
                    since = .seq(i)
                case .null: since = nil
                case let .object(m):
                    guard selector.isStream else { throw ProtocolError(.invalidMessage, "\"since\" for one session is a non-negative integer") }
                    guard m.count <= maxListLength else { throw ProtocolError(.invalidMessage, "\"since\" names at most \(maxListLength) sessions") }
                    var out: [String: Int] = [:]
                    for (id, seq) in m {
                        try validID(id, "each key of \"since\"")
                        guard case let .int(n) = seq, n >= 0 else { throw ProtocolError(.invalidMessage, "\"since\" values must be non-negative integers") }
                        out[id] = n
                    }
                    since = .map(out)
                default: throw ProtocolError(.invalidMessage, "\"since\" must be a non-negative integer, or an object of session id → seq")
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
            return .subscribe(selector, token: token, since: since, formats: formats)
        case "unsubscribe":
            try allow(["session", "sessions", "prefix"])
            return .unsubscribe(try selector())
        case "refresh":
            try allow(["session"])
            let s = try session()
            guard s != "*" else { throw ProtocolError(.invalidMessage, "refresh needs one session, not \"*\"") }
            return .refresh(session: s)
        case "pair":
            try allow(["session", "phoneNumber"])
            let s = try session()
            guard s != "*" else { throw ProtocolError(.invalidMessage, "pair needs one session, not \"*\"") }
            guard case let .string(raw)? = o["phoneNumber"], let digits = PhoneNumber.validate(raw) else {
                throw ProtocolError(.invalidMessage, PhoneNumber.rule)
            }
            return .pair(session: s, phoneNumber: digits)
        default:
            throw ProtocolError(.unknownOp, "unknown op \"\(op.prefix(40))\"; expected ping, subscribe, unsubscribe, refresh or pair")
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
