import Foundation
import HeapModule
import QRGateCore
import QRGateQR
import QRGateUpstream

/// What the simulator does with a request: answer now, answer later, or never (a hanging upstream).
public enum SimulatorReply: Sendable {
    case now(HTTPResponse)
    case after(seconds: Double, HTTPResponse)
    case never
}

/// A webhook the simulator wants delivered, in Evolution's envelope.
/// Its bytes are made when it goes out (`EvolutionSimulator.body(of:)`), so a QR's picture is drawn then.
public struct SimulatorWebhook: Sendable, Equatable {
    public var instance: String
    public var url: String
    /// The envelope without the picture.
    var envelope: [String: JSONValue]
    /// The code whose PNG goes in `data.qrcode.base64`.
    var pictureOf: String?
}

/// An Evolution API look-alike with WhatsApp's QR rotation, driven by an injected clock.
/// Not thread-safe: one owner (the event loop) calls it.
public final class EvolutionSimulator {
    public struct Faults: Sendable, Equatable {
        public var latencyMs = 0
        /// Share of requests answered 500, 0…1.
        public var errorRate = 0.0
        /// Never answer.
        public var timeout = false
        /// Answer 200 with a body that is not JSON.
        public var garbage = false
        /// Answer `{"count":0}` to every connect, and send no QR webhooks.
        public var countZero = false
        /// `normal`, `omit` (code only) or `garbage` (a broken data URL).
        public var base64 = "normal"
        /// Answer 200 with a 2 MiB body.
        public var oversize = false
        /// POST /oauth/token answers 503.
        public var tokenEndpointDown = false
    }

    struct Deadline: Comparable {
        let at: Date
        let name: String
        static func < (a: Deadline, b: Deadline) -> Bool { a.at < b.at }
    }

    struct Instance {
        var name: String
        var token: String
        var state: UpstreamLinkState = .close
        var refs = 0
        var code: String?
        /// The phone number it was connected with (`?number=`): its codes come with pairing codes.
        var number: String?
        var pairing: String?
        /// Rendered once per code, when an answer or a webhook first needs it (never for a code nobody
        /// asks for): rotations themselves cost a random string.
        var png = ""
        /// The last connect answer, encoded, and what it was for (code, refs, pairing code, fault).
        var answer: (key: String, bytes: [UInt8])?
        var qrExpiresAt: Date?
    }

    public let config: Config.Simulator
    /// Pictures by code. In the embedded default it is the gateway's own factory: a code the simulator
    /// renders for its answer is the gateway's cache hit when that answer arrives (one encoding per code).
    let frames: QRFrameFactory
    var instances: [String: Instance] = [:]
    var globalFaults = Faults()
    var instanceFaults: [String: Faults] = [:]
    var tokens: [String: Date] = [:]
    var pendingWebhooks: [SimulatorWebhook] = []
    /// Every QR expiry ever armed, soonest first. An entry whose instance has moved on (new code,
    /// linked, deleted) no longer matches its `qrExpiresAt` and is skipped: each request and each
    /// rotation costs O(log n), whatever the number of instances.
    private var deadlines = Heap<Deadline>()
    /// Deadlines taken off the heap so far: the work rotations and expiries cost, counted (one per rotation,
    /// whatever the number of instances; tests hold it).
    public private(set) var deadlinesVisited = 0
    private var rng = SystemRandomNumberGenerator()

    /// Where webhooks go; empty: none (`simulator.webhooks` off, or no target).
    public var webhookURL: String

    /// Whether `qrcode.updated` webhooks carry the PNG (`simulator.webhookPictures`; the gateway that runs
    /// the simulator inside it turns `auto` off).
    public var webhookPictures: Bool

    public init(config: Config.Simulator, frames: QRFrameFactory) {
        self.config = config
        self.frames = frames
        webhookURL = config.webhooks ? config.webhookURL : ""
        webhookPictures = config.webhookPictures != "never"
    }

    /// An instance's own API key (what its webhooks carry as `apikey`).
    public func token(of instance: String) -> String? { instances[instance]?.token }

    // MARK: Clock

    /// Rotates the QR codes that are due and ends attempts that ran out of refs; returns webhooks to deliver
    /// (those of these rotations and any still waiting).
    public func advance(now: Date) -> [SimulatorWebhook] {
        rotateDue(now: now)
        defer { pendingWebhooks.removeAll() }
        return pendingWebhooks
    }

    /// The rotations that are due; their webhooks wait in `pendingWebhooks` for the next `advance`.
    private func rotateDue(now: Date) {
        while let top = deadlines.min, top.at <= now {
            deadlines.removeMin()
            deadlinesVisited += 1
            guard var i = instances[top.name], i.state == .connecting, i.qrExpiresAt == top.at else { continue }
            if i.refs < config.maxRefs {
                i.refs += 1
                issueCode(&i)
                arm(&i, at: top.at.addingTimeInterval(config.nextQrSeconds))
                webhookQR(&i)
            } else {
                // Baileys: "QR refs attempts ended" (408), then the instance closes.
                i.state = .close
                i.number = nil
                i.pairing = nil
                i.code = nil
                i.qrExpiresAt = nil
                webhook(i, event: "qrcode.updated", data: ["message": .string("QR code limit reached, please login again"), "statusCode": .int(500)])
                webhook(i, event: "connection.update", data: ["instance": .string(i.name), "state": .string("close"), "statusReason": .int(408)])
            }
            instances[top.name] = i
        }
    }

    /// Sets when the instance's current code expires.
    private func arm(_ i: inout Instance, at: Date) {
        i.qrExpiresAt = at
        deadlines.insert(Deadline(at: at, name: i.name))
    }

    /// When `advance` next has work.
    public func nextDeadline() -> Date? {
        while let top = deadlines.min {
            if let i = instances[top.name], i.state == .connecting, i.qrExpiresAt == top.at { return top.at }
            deadlines.removeMin()
        }
        return nil
    }

    // MARK: HTTP

    /// Whether the simulator serves this path.
    public static func handles(_ path: String) -> Bool {
        path.hasPrefix("/instance/") || path.hasPrefix("/simulator/") || path == "/oauth/token"
    }

    public func handle(_ req: HTTPRequest, now: Date) -> SimulatorReply {
        // State current even between timer ticks; the webhooks of rotations done here go out with the next
        // `advance` (the host ticks after every request). Discarding them lost a rotation's webhook whenever
        // a request came between its deadline and the timer.
        rotateDue(now: now)
        let parts = req.path.split(separator: "/").map(String.init)
        if parts.first == "simulator" { return .now(control(req, parts: Array(parts.dropFirst()), now: now)) }
        if req.path == "/oauth/token" { return oauth(req, now: now) }

        let instanceName = parts.count >= 3 ? parts[2] : nil
        let faults = instanceName.flatMap { instanceFaults[$0] } ?? globalFaults
        if faults.timeout { return .never }
        let response: HTTPResponse
        if faults.errorRate > 0, Double.random(in: 0..<1, using: &rng) < faults.errorRate {
            response = evolutionError(500, "Internal Server Error", "simulated failure")
        } else if faults.garbage {
            response = .text(200, "<html>502 Bad Gateway</html> not json", contentType: "application/json")
        } else if faults.oversize {
            response = HTTPResponse(status: 200, contentType: "application/json", body: .bytes(Array(repeating: 0x20, count: 2 << 20)))
        } else {
            response = evolution(req, parts: parts, faults: faults, now: now)
        }
        return faults.latencyMs > 0 ? .after(seconds: Double(faults.latencyMs) / 1000, response) : .now(response)
    }

    private func authorized(_ req: HTTPRequest, instance: String?, now: Date) -> Bool {
        guard let key = req.headers["apikey"], !key.isEmpty else { return false }
        if key == config.apiKey { return true }
        if let exp = tokens[key], now < exp { return true }
        if let instance, let i = instances[instance], i.token == key { return true }
        return false
    }

    private func evolution(_ req: HTTPRequest, parts: [String], faults: Faults, now: Date) -> HTTPResponse {
        guard parts.first == "instance", parts.count >= 2 else { return evolutionError(404, "Not Found", "Cannot \(req.method.rawValue) \(req.path)") }
        let action = parts[1]
        let name = parts.count >= 3 ? parts[2] : nil
        guard authorized(req, instance: name, now: now) else { return evolutionError(401, "Unauthorized", "Unauthorized") }
        switch (req.method, action) {
        case (.post, "create"):
            guard let body = JSONValue.parse(req.body), let n = body["instanceName"]?.stringValue, ClientMessage.isValidSessionID(n) else {
                return evolutionError(400, "Bad Request", "instanceName is required")
            }
            guard instances[n] == nil else { return evolutionError(403, "Forbidden", "This name \"\(n)\" is already in use.") }
            let i = Instance(name: n, token: randomToken(32))
            instances[n] = i
            return .json(201, ["instance": ["instanceName": n, "instanceId": UUID().uuidString.lowercased(), "status": "created"], "hash": i.token])
        case (.get, "fetchInstances"):
            let list = instances.values.sorted { $0.name < $1.name }.map {
                ["name": $0.name, "connectionStatus": $0.state.rawValue, "token": $0.token] as [String: Any]
            }
            return .json(200, list)
        default:
            break
        }
        guard let name, var i = instances[name] else { return evolutionError(404, "Not Found", "The \"\(name ?? "")\" instance does not exist") }
        defer { instances[name] = i }
        switch (req.method, action) {
        case (.get, "connect"):
            if i.state == .open { return .json(200, ["instance": ["instanceName": i.name, "state": "open"]]) }
            var number: String?
            if let raw = req.query["number"] {
                guard let digits = PhoneNumber.validate(raw) else { return evolutionError(400, "Bad Request", "number must be the phone's digits with the country code") }
                number = digits
            }
            if faults.countZero { return .json(200, ["count": 0]) }
            if i.state != .connecting {
                i.state = .connecting
                i.refs = 1
                i.number = number
                issueCode(&i)
                arm(&i, at: now.addingTimeInterval(number == nil ? config.firstQrSeconds : config.pairingFirstSeconds))
                webhook(i, event: "connection.update", data: ["instance": .string(i.name), "state": .string("connecting"), "statusReason": .int(200)])
                webhookQR(&i)
            }
            guard let code = i.code else { return .json(200, ["count": 0]) }
            // A number asked for on an attempt already showing QRs: its pairing code from now on.
            if let number, i.number != number {
                i.number = number
                i.pairing = newPairingCode()
            }
            // The same answer to every poll until the code rotates: encoded once (a 5 KB data URL through
            // a JSON writer per poll was most of the simulator's cost with thousands of instances).
            let shownPairing = number != nil ? i.pairing : nil
            let key = "\(code)|\(i.refs)|\(shownPairing ?? "-")|\(faults.base64)"
            if let cached = i.answer, cached.key == key { return HTTPResponse(status: 200, contentType: "application/json", body: .bytes(cached.bytes)) }
            var body: [String: JSONValue] = ["code": .string(code), "count": .int(i.refs), "pairingCode": shownPairing.map { .string($0) } ?? .null]
            switch faults.base64 {
            case "omit": break
            case "garbage": body["base64"] = .string("data:image/png;base64,!!!not-base64!!!")
            default: body["base64"] = .string(picture(&i))
            }
            let bytes = Array(JSONValue.object(body).encoded())
            i.answer = (key, bytes)
            return HTTPResponse(status: 200, contentType: "application/json", body: .bytes(bytes))
        case (.get, "connectionState"):
            return .json(200, ["instance": ["instanceName": i.name, "state": i.state.rawValue]])
        case (.delete, "logout"):
            guard i.state == .open || i.state == .connecting else {
                return evolutionError(400, "Bad Request", "The \"\(i.name)\" instance is not connected")
            }
            i.state = .close
            i.number = nil
            i.pairing = nil
            i.code = nil
            i.qrExpiresAt = nil
            webhook(i, event: "connection.update", data: ["instance": .string(i.name), "state": .string("close"), "statusReason": .int(401)])
            return .json(200, ["status": "SUCCESS", "error": false, "response": ["message": "Instance logged out"]])
        case (.delete, "delete"):
            instances[name] = nil
            return .json(200, ["status": "SUCCESS", "error": false, "response": ["message": "Instance deleted"]])
        default:
            return evolutionError(404, "Not Found", "Cannot \(req.method.rawValue) \(req.path)")
        }
    }

    // MARK: Control endpoints (/simulator/...)

    private func control(_ req: HTTPRequest, parts: [String], now: Date) -> HTTPResponse {
        switch (req.method, parts.first ?? "") {
        case (.post, "scan"):
            guard parts.count == 2, var i = instances[parts[1]] else { return .error(404, "no such instance") }
            guard i.state == .connecting, i.code != nil else { return .error(409, "instance \(i.name) shows no QR to scan (state \(i.state.rawValue))") }
            return link(&i)
        case (.post, "pair"):
            // The user typed the pairing code on the phone.
            guard parts.count == 2, var i = instances[parts[1]] else { return .error(404, "no such instance") }
            guard i.state == .connecting, let expected = i.pairing else {
                return .error(409, "instance \(i.name) has no pairing code to enter (state \(i.state.rawValue))")
            }
            guard let body = JSONValue.parse(req.body), case let .string(typed)? = body["code"] else {
                return .error(400, "body must be {\"code\": \"ABCD-EFGH\"}")
            }
            guard PairingCode.normalize(typed) == PairingCode.normalize(expected) else { return .error(400, "wrong pairing code") }
            return link(&i)
        case (.post, "disconnect"):
            // The phone unlinks the device.
            guard parts.count == 2, var i = instances[parts[1]] else { return .error(404, "no such instance") }
            i.state = .close
            i.number = nil
            i.pairing = nil
            i.code = nil
            i.qrExpiresAt = nil
            instances[i.name] = i
            webhook(i, event: "connection.update", data: ["instance": .string(i.name), "state": .string("close"), "statusReason": .int(401)])
            return .json(200, ["success": true, "instance": i.name, "state": "close"])
        case (.post, "faults"):
            guard let json = JSONValue.parse(req.body), case let .object(o) = json else { return .error(400, "body must be a JSON object") }
            var f = Faults()
            for (k, v) in o where k != "instance" {
                switch (k, v) {
                case let ("latencyMs", .int(n)) where n >= 0 && n <= 600_000: f.latencyMs = n
                case let ("errorRate", .double(d)) where d >= 0 && d <= 1: f.errorRate = d
                case let ("errorRate", .int(n)) where n == 0 || n == 1: f.errorRate = Double(n)
                case let ("timeout", .bool(b)): f.timeout = b
                case let ("garbage", .bool(b)): f.garbage = b
                case let ("countZero", .bool(b)): f.countZero = b
                case let ("oversize", .bool(b)): f.oversize = b
                case let ("tokenEndpointDown", .bool(b)): f.tokenEndpointDown = b
                case let ("base64", .string(s)) where ["normal", "omit", "garbage"].contains(s): f.base64 = s
                default: return .error(400, "bad fault \"\(k.prefix(30))\"")
                }
            }
            if let name = o["instance"]?.stringValue { instanceFaults[name] = f } else { globalFaults = f; instanceFaults.removeAll() }
            return .json(200, ["success": true])
        case (.delete, "faults"):
            globalFaults = Faults()
            instanceFaults.removeAll()
            return .json(200, ["success": true])
        case (.post, "expire-tokens"):
            tokens.removeAll()
            return .json(200, ["success": true])
        case (.get, "state"):
            let list = instances.values.sorted { $0.name < $1.name }.map { i -> [String: Any] in
                ["name": i.name, "state": i.state.rawValue, "refs": i.refs, "code": i.code ?? NSNull(), "pairingCode": i.pairing ?? NSNull()]
            }
            return .json(200, ["instances": list])
        default:
            return .error(404, "no such simulator endpoint")
        }
    }

    /// The phone linked (a scanned QR or a typed pairing code): state `open`, said by webhook.
    private func link(_ i: inout Instance) -> HTTPResponse {
        i.state = .open
        i.code = nil
        i.pairing = nil
        i.qrExpiresAt = nil
        instances[i.name] = i
        webhook(i, event: "connection.update", data: ["instance": .string(i.name), "state": .string("open"), "statusReason": .int(200)])
        return .json(200, ["success": true, "instance": i.name, "state": "open"])
    }

    private func oauth(_ req: HTTPRequest, now: Date) -> SimulatorReply {
        if globalFaults.tokenEndpointDown { return .now(.error(503, "token endpoint unavailable")) }
        guard req.method == .post else { return .now(.error(405, "POST only")) }
        var fields: [String: String] = [:]
        if let json = JSONValue.parse(req.body), case let .object(o) = json {
            for (k, v) in o { fields[k] = v.stringValue }
        } else {
            for pair in String(decoding: req.body, as: UTF8.self).split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
                if kv.count == 2 { fields[kv[0]] = kv[1] }
            }
        }
        guard fields["client_id"] == config.tokenClientId, fields["client_secret"] == config.tokenClientSecret else {
            return .now(.json(401, ["error": "invalid_client"]))
        }
        let token = "sim_" + randomToken(40)
        tokens[token] = now.addingTimeInterval(TimeInterval(config.tokenTTLSeconds))
        return .now(.json(200, ["access_token": token, "expires_in": config.tokenTTLSeconds, "token_type": "Bearer"]))
    }

    // MARK: Helpers

    private func evolutionError(_ status: Int, _ error: String, _ message: String) -> HTTPResponse {
        .json(status, ["status": status, "error": error, "response": ["message": [message]]])
    }

    /// The current code's PNG data URL, rendered on first need.
    private func picture(_ i: inout Instance) -> String {
        guard let code = i.code else { return "" }
        if i.png.isEmpty { i.png = (try? frames.frame(for: UpstreamQR(code: code)).pngDataURL) ?? "" }
        return i.png
    }

    private func webhookQR(_ i: inout Instance) {
        guard let code = i.code, !webhookURL.isEmpty else { return }
        // An instance that answers "count 0" has no QR to tell of either.
        if (instanceFaults[i.name] ?? globalFaults).countZero { return }
        let qr: [String: JSONValue] = ["instance": .string(i.name), "code": .string(code), "pairingCode": i.pairing.map { .string($0) } ?? .null]
        webhook(i, event: "qrcode.updated", data: ["qrcode": .object(qr)], pictureOf: webhookPictures ? code : nil)
    }

    private func webhook(_ i: Instance, event: String, data: [String: JSONValue], pictureOf: String? = nil) {
        guard !webhookURL.isEmpty else { return }
        let envelope: [String: JSONValue] = [
            "event": .string(event), "instance": .string(i.name), "data": .object(data),
            "destination": .string(webhookURL), "date_time": .string(Date().formatted(.iso8601)),
            "sender": .string("qrgate-simulator"), "server_url": .string("http://simulator"), "apikey": .string(i.token),
        ]
        pendingWebhooks.append(SimulatorWebhook(instance: i.name, url: webhookURL, envelope: envelope, pictureOf: pictureOf))
    }

    /// A webhook's bytes, made as it goes out. A fleet's rotations queue thousands of webhooks at once:
    /// drawn at rotation, most pictures would have left the shared cache before the gateway reads them,
    /// and be drawn again there.
    public func body(of hook: SimulatorWebhook) -> [UInt8] {
        var envelope = hook.envelope
        if let code = hook.pictureOf, case var .object(data)? = envelope["data"], case var .object(qr)? = data["qrcode"],
           let png = try? frames.frame(for: UpstreamQR(code: code)).pngDataURL {
            qr["base64"] = .string(png)
            data["qrcode"] = .object(qr)
            envelope["data"] = .object(data)
        }
        return Array(JSONValue.object(envelope).encoded())
    }

    private func issueCode(_ i: inout Instance) {
        let code = newCode()
        i.code = code
        i.pairing = i.number == nil ? nil : newPairingCode()
        i.png = ""
    }

    /// Eight characters, as Evolution returns them (WhatsApp shows them as ABCD-EFGH).
    private func newPairingCode() -> String { randomToken(8) }

    /// A code shaped like WhatsApp's: "2@" + ref, then three base64 keys, comma-separated.
    private func newCode() -> String {
        "2@" + randomToken(64, alphabet: Self.base64Alphabet) + "," + randomToken(43, alphabet: Self.base64Alphabet) + "=,"
            + randomToken(43, alphabet: Self.base64Alphabet) + "=," + randomToken(24, alphabet: Self.base64Alphabet)
    }

    private static let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    private static let tokenAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")

    /// Six random bits per character, ten characters per draw (a draw is a `getrandom` call: one per character
    /// was 2 % of a 3 000-session fleet's CPU); a value past the alphabet is drawn again, so none is favoured.
    private func randomToken(_ n: Int, alphabet: [Character] = EvolutionSimulator.tokenAlphabet) -> String {
        precondition(alphabet.count <= 64 && !alphabet.isEmpty)
        var out = [Character]()
        out.reserveCapacity(n)
        var bits: UInt64 = 0, left = 0
        while out.count < n {
            if left < 6 { bits = rng.next(); left = 64 }
            let v = Int(bits & 63)
            bits >>= 6
            left -= 6
            if v < alphabet.count { out.append(alphabet[v]) }
        }
        return String(out)
    }
}
