import Foundation

/// A QR code ready to push: the raw code and its two images. The one QR value type: the renderer
/// makes it, the frame factory caches it, the machine holds it, the store keeps it.
public struct SessionQR: Sendable, Equatable {
    public var code: String
    /// The SVG and PNG, drawn when first wanted (`QRPictures`).
    public var pictures: QRPictures
    /// True when the PNG came from the upstream.
    public var upstreamImage: Bool
    /// The pairing code the upstream gave with this QR (`ABCD-EFGH`), when the session links by phone
    /// number: it lives and dies with the QR.
    public var pairingCode: String?

    /// `data:image/png;base64,…`: the upstream's when it was well-formed, else ours ("" when not at hand).
    public var pngDataURL: String { pictures.png }
    public var svg: String { pictures.svg }
    /// Whether both pictures can be had without drawing them from elsewhere (false for a QR read back
    /// from a store that keeps codes, not pictures).
    public var hasPictures: Bool { pictures.complete }

    /// A QR whose pictures are at hand ("" for one that is not).
    public init(code: String, pngDataURL: String, svg: String, upstreamImage: Bool = false, pairingCode: String? = nil) {
        self.init(code: code, pictures: QRPictures(svg: svg, png: pngDataURL), upstreamImage: upstreamImage, pairingCode: pairingCode)
    }

    public init(code: String, pictures: QRPictures, upstreamImage: Bool = false, pairingCode: String? = nil) {
        self.code = code; self.pictures = pictures; self.upstreamImage = upstreamImage; self.pairingCode = pairingCode
    }

    /// The same code, origin and pairing code; pictures given outright must match too. Pictures drawn on
    /// demand are the code's (the renderer is deterministic), so comparing never draws them.
    public static func == (a: SessionQR, b: SessionQR) -> Bool {
        guard a.code == b.code, a.upstreamImage == b.upstreamImage, a.pairingCode == b.pairingCode else { return false }
        if a.pictures === b.pictures { return true }
        switch (a.pictures.given, b.pictures.given) {
        case let (x?, y?): return x == y
        default: return a.hasPictures == b.hasPictures && (!a.upstreamImage || a.pngDataURL == b.pngDataURL)
        }
    }
}

/// Timing and limits of the lifecycle (from `qr.*`, `poll.*`, `refresh.*`).
public struct SessionRules: Sendable, Equatable {
    public var ttlSeconds: Double
    public var maxAttempts: Int
    public var countdownIntervalSeconds: Double
    public var pollIntervalSeconds: Double
    public var refreshMinIntervalSeconds: Double
    public var backoffMaxSeconds: Double
    /// A linked session's upstream state is checked this often, so an unlink is noticed without webhooks.
    public var connectedCheckSeconds: Double
    /// After a QR came by webhook, the next poll waits this long (at least `pollIntervalSeconds`): the
    /// upstream has shown it tells, and the poll is the safety net for a webhook that never comes.
    public var pollAfterWebhookSeconds: Double
    /// When a QR's time is up, the upstream is asked once more for its current code before the QR counts as
    /// expired, and its answer is waited for at most this long (0: expired at once, no question). WhatsApp's
    /// first code lives 60 s, as long as the default TTL, so its first rotation and the expiry race: a new
    /// code seen then is a rotation, and saves a regeneration (a logout, a new connect, one of `maxAttempts`).
    public var expiryCheckSeconds: Double

    public init(ttlSeconds: Double = 60, maxAttempts: Int = 3, countdownIntervalSeconds: Double = 1, pollIntervalSeconds: Double = 5,
                refreshMinIntervalSeconds: Double = 3, backoffMaxSeconds: Double = 60, connectedCheckSeconds: Double = 30,
                pollAfterWebhookSeconds: Double = 25, expiryCheckSeconds: Double = 3) {
        self.connectedCheckSeconds = connectedCheckSeconds
        self.pollAfterWebhookSeconds = pollAfterWebhookSeconds
        self.expiryCheckSeconds = expiryCheckSeconds
        self.ttlSeconds = ttlSeconds; self.maxAttempts = maxAttempts; self.countdownIntervalSeconds = countdownIntervalSeconds
        self.pollIntervalSeconds = pollIntervalSeconds; self.refreshMinIntervalSeconds = refreshMinIntervalSeconds; self.backoffMaxSeconds = backoffMaxSeconds
    }
}

/// What happened to a session, as pushed to subscribers (seq and timestamp are added by the registry).
public enum SessionEvent: Sendable, Equatable {
    case qrGenerated(SessionQR, expiresAt: Date, attempt: Int)
    /// The code to type on the phone, beside the QR it came with (same expiry).
    case pairingCode(String, expiresAt: Date, attempt: Int)
    /// Not numbered, not stored, not replayed: computed from `qrExpiresAt` for sessions someone watches
    /// (`SessionRegistry.countdown`), never by the machine.
    case countdown(remaining: Int, expiresAt: Date)
    case qrExpired(attempt: Int)
    case qrRegenerating(attempt: Int, message: String)
    case connected(message: String, at: Date)
    case error(String)
    case upstreamError(String)
    case disconnected

    public var action: String {
        switch self {
        case .qrGenerated: "qr_generated"
        case .pairingCode: "pairing_code"
        case .countdown: "countdown"
        case .qrExpired: "qr_expired"
        case .qrRegenerating: "qr_regenerating"
        case .connected: "connected"
        case .error: "error"
        case .upstreamError: "upstream_error"
        case .disconnected: "disconnected"
        }
    }
}

/// Upstream work the machine asks for; results come back as inputs.
public enum SessionCommand: Sendable, Equatable {
    /// GET connect: a QR, "no QR yet", or a state.
    case fetchQR
    /// Log out first (going on if that fails), then fetch a fresh QR.
    case logoutThenFetch
    /// Log out and stop.
    case logout
    /// Ask the upstream for the link state (a linked session's periodic check).
    case checkState
}

/// What drives the machine.
public enum SessionInput: Sendable, Equatable {
    case start
    case upstreamQR(SessionQR)
    case upstreamNoQR
    case upstreamState(UpstreamLinkState)
    case upstreamFailed(String)
    /// The logout the machine asked for finished (whatever its outcome).
    case logoutFinished
    case tick
    case disconnect
    /// Unasked news that the link ended (a `close`/`refused` webhook, "QR code limit reached"): asked again
    /// with a state check before it counts. Webhooks carry no generation, and the logout of a refresh sends
    /// one that can arrive after the new QR (over a cluster's bus, easily): trusted as it came, it expired
    /// the QR it was older than.
    case upstreamEndHint
    /// Unasked news by webhook: handled as the input it carries. A QR that came so moves the next poll
    /// to `pollAfterWebhookSeconds` away, since a rotation will most likely come the same way.
    indirect case pushed(SessionInput)
    /// The answer to a command issued in `generation`: dropped when a refresh, disconnect, expiry or
    /// start has overtaken it since (the machine's generation moved on).
    indirect case answer(SessionInput, generation: Int)
}

/// Upstream link states the machine cares about (Evolution's `open`, `connecting`, `close`, `refused`).
public enum UpstreamLinkState: String, Sendable, Equatable, Codable, CaseIterable { case open, connecting, close, refused }

/// The answer to an admin refresh.
public enum RefreshOutcome: Sendable, Equatable {
    case accepted
    case alreadyConnected
    case rateLimited(retryAfterSeconds: Int)
    /// A request that spends an attempt (a browser's pairing request) when none is left, or when the
    /// session is not showing codes (pending).
    case noAttemptsLeft
}

/// One session's lifecycle as a value: `handle(input, now)` returns what to push and what to do.
/// No clock reads, no I/O: time comes in as `now`.
public struct SessionMachine: Sendable, Equatable {
    public enum Status: String, Sendable, Equatable, Codable { case idle, pending, connected, failed, disconnected }

    public static let alreadyConnectedMessage = "Session already connected. No QR needed."
    public static let connectedMessage = "WhatsApp linked successfully."

    public let rules: SessionRules
    public private(set) var status: Status = .idle
    public private(set) var qr: SessionQR?
    public private(set) var qrExpiresAt: Date?
    public private(set) var qrUpdatedAt: Date?
    /// Regenerations used in this round (0 for the first QR).
    public private(set) var attempt = 0
    public private(set) var connectedAt: Date?
    public private(set) var lastError: String?
    /// An upstream call is running; no second one is started.
    public private(set) var inFlight = false
    /// The next QR from the upstream starts a new validity window even if it repeats the code.
    public private(set) var wantsFreshQR = false
    public private(set) var consecutiveFailures = 0
    public private(set) var retryAt: Date?
    public private(set) var nextPollAt: Date?
    public private(set) var lastRefreshAt: Date?
    /// When the upstream last answered or told something (a webhook): the refresh cycle skips sessions it kept current.
    public private(set) var lastUpstreamAt: Date?
    /// The last code a refresh, expiry or end took away: its webhook can still be on its way (the simulator's, or
    /// Evolution's, sent just before the logout), and it must not come back as the new round's QR.
    public private(set) var retiredCode: String?
    /// Moves on whenever a new round overtakes the commands in flight (start, refresh, expiry,
    /// disconnect). Commands are issued in the current generation; an answer from an older one is stale.
    public private(set) var generation = 0

    public init(rules: SessionRules) { self.rules = rules }

    public var maxAttempts: Int { rules.maxAttempts }

    /// Whole seconds left on the current QR.
    public func remaining(at now: Date) -> Int {
        guard let exp = qrExpiresAt else { return 0 }
        return max(0, Int((exp.timeIntervalSince(now)).rounded(.up)))
    }

    /// When `tick` next has something to do.
    public func nextDeadline() -> Date? {
        if status == .connected { return inFlight ? nil : nextPollAt }
        guard status == .pending else { return nil }
        var candidates: [Date] = []
        if let e = qrExpiresAt {
            // In flight at expiry (the last look, or a poll that was out): its answer is waited for this long.
            if !inFlight { candidates.append(e) } else if rules.expiryCheckSeconds > 0 { candidates.append(e.addingTimeInterval(rules.expiryCheckSeconds)) }
        }
        if !inFlight {
            if let r = retryAt { candidates.append(r) } else if let p = nextPollAt { candidates.append(p) }
        }
        return candidates.min()
    }

    public mutating func handle(_ input: SessionInput, now: Date) -> (events: [SessionEvent], commands: [SessionCommand]) {
        var events: [SessionEvent] = []
        var commands: [SessionCommand] = []
        switch input {
        case let .answer(inner, answered):
            guard answered == generation else { break } // overtaken: its news is about an older round
            return handle(inner, now: now)

        case let .pushed(inner):
            // A webhook of the code a refresh or expiry just retired, arriving after it: that code is being
            // logged out upstream. (Polls may still bring a code back: a logout that failed keeps it valid.)
            if case let .upstreamQR(q) = inner, q.code == retiredCode { return ([], []) }
            let (wasInFlight, round) = (inFlight, generation)
            let r = handle(inner, now: now)
            // News nobody asked for answers no command: one still out is still out, and its answer (of this
            // round) is still to come. Taken for that answer, a webhook QR arriving while a refresh's logout
            // ran let the logout's own `close` webhook start a state check that saw `close` and expired the
            // new QR, spending an attempt. (An input that started a new round made the command stale.)
            if wasInFlight, generation == round { inFlight = true }
            if case .upstreamQR = inner, status == .pending, retryAt == nil {
                let stretched = now.addingTimeInterval(max(rules.pollIntervalSeconds, rules.pollAfterWebhookSeconds))
                if nextPollAt.map({ $0 < stretched }) ?? true { nextPollAt = stretched }
            }
            return r

        case .start:
            guard status != .pending && status != .connected else { break }
            generation += 1
            status = .pending
            attempt = 0
            lastError = nil
            wantsFreshQR = true
            consecutiveFailures = 0
            retryAt = nil
            issue(.fetchQR, into: &commands, now: now)

        case let .upstreamQR(newQR):
            inFlight = false
            succeeded(now)
            guard status == .pending else { break }
            if !wantsFreshQR, newQR.code == qr?.code, let exp = qrExpiresAt {
                // The same code is the same frame; only a new pairing code beside it is news.
                if let p = newQR.pairingCode, p != qr?.pairingCode {
                    qr?.pairingCode = p
                    events.append(.pairingCode(p, expiresAt: exp, attempt: attempt))
                }
                break
            }
            wantsFreshQR = false
            qr = newQR
            qrUpdatedAt = now
            qrExpiresAt = now.addingTimeInterval(rules.ttlSeconds)
            events.append(.qrGenerated(newQR, expiresAt: qrExpiresAt!, attempt: attempt))
            if let p = newQR.pairingCode { events.append(.pairingCode(p, expiresAt: qrExpiresAt!, attempt: attempt)) }

        case .upstreamNoQR:
            inFlight = false
            succeeded(now)

        case let .upstreamState(state):
            inFlight = false
            succeeded(now)
            switch (state, status) {
            case (.open, .pending), (.open, .idle), (.open, .disconnected), (.open, .failed):
                status = .connected
                connectedAt = now
                attempt = 0
                clearQR()
                lastError = nil
                nextPollAt = now.addingTimeInterval(rules.connectedCheckSeconds)
                events.append(.connected(message: Self.connectedMessage, at: now))
            case (.close, .connected), (.refused, .connected):
                status = .disconnected
                clearQR()
                events.append(.disconnected)
            case (.close, .pending), (.refused, .pending):
                // WhatsApp ended this attempt (refs ran out): same as an expiry.
                if !wantsFreshQR { expire(now: now, events: &events, commands: &commands) }
            default:
                break
            }

        case let .upstreamFailed(reason):
            inFlight = false
            if status == .connected {
                // A failed check of a linked session: try again later, the link is presumably still there.
                nextPollAt = now.addingTimeInterval(min(rules.backoffMaxSeconds, rules.connectedCheckSeconds))
                events.append(.upstreamError(reason))
                break
            }
            consecutiveFailures += 1
            lastError = reason
            // Exponential backoff per session, capped, so a broken instance cannot loop.
            let delay = min(rules.backoffMaxSeconds, rules.pollIntervalSeconds * pow(2, Double(consecutiveFailures - 1)))
            retryAt = now.addingTimeInterval(delay)
            events.append(.upstreamError(reason))

        case .logoutFinished:
            inFlight = false

        case .tick:
            if status == .connected, !inFlight, let p = nextPollAt, now >= p {
                inFlight = true
                nextPollAt = now.addingTimeInterval(rules.connectedCheckSeconds)
                commands.append(.checkState)
                break
            }
            guard status == .pending else { break }
            if let exp = qrExpiresAt, now >= exp {
                let check = rules.expiryCheckSeconds
                if !inFlight, check > 0, consecutiveFailures == 0 {
                    // The last look: the upstream may have rotated the code just now. Its answer decides (the
                    // check after the switch); an upstream that has been failing is not asked again.
                    issue(.fetchQR, into: &commands, now: now)
                } else if !inFlight || (check > 0 && now >= exp.addingTimeInterval(check)) {
                    // No look, or no answer in time: expired (a late answer is of an older generation).
                    expire(now: now, events: &events, commands: &commands)
                }
            }
            if !inFlight, status == .pending {
                if let r = retryAt {
                    if now >= r { retryAt = nil; issue(wantsFreshQR && qr != nil ? .logoutThenFetch : .fetchQR, into: &commands, now: now) }
                } else if let p = nextPollAt, now >= p {
                    issue(.fetchQR, into: &commands, now: now)
                }
            }

        case .upstreamEndHint:
            // A poll already out answers the same question (with its generation).
            guard status == .pending || status == .connected, !inFlight else { break }
            issue(.checkState, into: &commands, now: now)
            if status == .connected { nextPollAt = now.addingTimeInterval(rules.connectedCheckSeconds) }

        case .disconnect:
            guard status != .disconnected && status != .idle else { break }
            generation += 1
            inFlight = false
            status = .disconnected
            clearQR()
            connectedAt = nil
            events.append(.disconnected)
            commands.append(.logout)
        }
        // Past its expiry the QR is still held only while the last look is out: any answer or news that did
        // not bring a new code (the same one, none, a state, a failure) ends it.
        if input != .tick, status == .pending, !inFlight, let exp = qrExpiresAt, now >= exp {
            expire(now: now, events: &events, commands: &commands)
        }
        return (events, commands)
    }

    /// Why a refresh happens, as `qr_regenerating` tells subscribers.
    public static let refreshMessage = "Generating a new QR code (requested by an admin)"
    public static let pairingMessage = "Requesting a pairing code for the phone number"

    /// An admin asks for a fresh QR: no attempt limit, but at most one per `refreshMinIntervalSeconds`.
    /// Every subscriber learns at once that the shown QR is going away (`qr_regenerating`, attempt 0).
    /// `asAttempt`: the round spends one of the attempts instead of resetting them (a browser's pairing
    /// request: it may replace the code the user sees, but never keep a session alive past its attempts).
    public mutating func refresh(now: Date, message: String = refreshMessage, asAttempt: Bool = false) -> (outcome: RefreshOutcome, events: [SessionEvent], commands: [SessionCommand]) {
        if status == .connected { return (.alreadyConnected, [], []) }
        if asAttempt, status != .pending || attempt >= rules.maxAttempts { return (.noAttemptsLeft, [], []) }
        if let last = lastRefreshAt {
            let wait = last.addingTimeInterval(rules.refreshMinIntervalSeconds).timeIntervalSince(now)
            if wait > 0 { return (.rateLimited(retryAfterSeconds: Int(wait.rounded(.up))), [], []) }
        }
        lastRefreshAt = now
        generation += 1
        status = .pending
        attempt = asAttempt ? attempt + 1 : 0
        lastError = nil
        consecutiveFailures = 0
        retryAt = nil
        wantsFreshQR = true
        clearQR()
        var commands: [SessionCommand] = []
        inFlight = false // a running poll's answer is now stale (older generation); this refresh goes out now
        issue(.logoutThenFetch, into: &commands, now: now)
        return (.accepted, [.qrRegenerating(attempt: attempt, message: message)], commands)
    }

    /// The fields a store keeps; enough to continue by the same rules after a restart.
    public struct Persisted: Sendable, Equatable {
        public var status: Status
        public var qr: SessionQR?
        public var qrExpiresAt: Date?
        public var qrUpdatedAt: Date?
        public var attempt: Int
        public var connectedAt: Date?
        public var lastError: String?
        public var lastRefreshAt: Date?

        public init(status: Status, qr: SessionQR?, qrExpiresAt: Date?, qrUpdatedAt: Date?, attempt: Int, connectedAt: Date?,
                    lastError: String?, lastRefreshAt: Date?) {
            self.status = status; self.qr = qr; self.qrExpiresAt = qrExpiresAt; self.qrUpdatedAt = qrUpdatedAt; self.attempt = attempt
            self.connectedAt = connectedAt; self.lastError = lastError; self.lastRefreshAt = lastRefreshAt
        }
    }

    public var persisted: Persisted {
        Persisted(status: status, qr: qr, qrExpiresAt: qrExpiresAt, qrUpdatedAt: qrUpdatedAt, attempt: attempt,
                  connectedAt: connectedAt, lastError: lastError, lastRefreshAt: lastRefreshAt)
    }

    /// A machine continuing from stored fields: a pending session resumes at once (its next tick
    /// expires a QR that lapsed while the gateway was down, or fetches one it was waiting for).
    public init(rules: SessionRules, restoring p: Persisted, now: Date) {
        self.rules = rules
        status = p.status; qr = p.qr; qrExpiresAt = p.qrExpiresAt; qrUpdatedAt = p.qrUpdatedAt; attempt = min(p.attempt, rules.maxAttempts)
        connectedAt = p.connectedAt; lastError = p.lastError; lastRefreshAt = p.lastRefreshAt
        if status == .connected { nextPollAt = now }
        if status == .pending {
            wantsFreshQR = qr == nil
            nextPollAt = now
        }
    }

    private mutating func expire(now: Date, events: inout [SessionEvent], commands: inout [SessionCommand]) {
        events.append(.qrExpired(attempt: attempt))
        generation += 1
        clearQR()
        if attempt < rules.maxAttempts {
            attempt += 1
            wantsFreshQR = true
            events.append(.qrRegenerating(attempt: attempt, message: "Generating a new QR code (attempt \(attempt)/\(rules.maxAttempts))"))
            issue(.logoutThenFetch, into: &commands, now: now)
        } else {
            status = .failed
            let message = "QR code generation failed after \(rules.maxAttempts) attempt\(rules.maxAttempts == 1 ? "" : "s"). Please request a new validation."
            lastError = message
            events.append(.error(message))
            commands.append(.logout)
        }
    }

    private mutating func issue(_ c: SessionCommand, into commands: inout [SessionCommand], now: Date) {
        inFlight = true
        nextPollAt = now.addingTimeInterval(rules.pollIntervalSeconds)
        commands.append(c)
    }

    private mutating func succeeded(_ now: Date) {
        lastUpstreamAt = now
        // The upstream answers again: its old error no longer describes the session.
        if status == .pending && consecutiveFailures > 0 { lastError = nil }
        consecutiveFailures = 0
        retryAt = nil
        // Webhooks and polls both count: the next poll waits a full interval after fresh news. Fresh news never
        // brings it closer: a poll put off because webhooks tell (`pushed`) stays off when an answer comes
        // meanwhile (the refresh cycle's, or a connect answer overtaken by its own webhook).
        let next = now.addingTimeInterval(rules.pollIntervalSeconds)
        if nextPollAt.map({ $0 < next }) ?? true { nextPollAt = next }
    }

    private mutating func clearQR() {
        if let code = qr?.code { retiredCode = code }
        qr = nil
        qrExpiresAt = nil
    }
}
