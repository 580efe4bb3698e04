/// Who is allowed what on the socket.
public enum Role: String, Sendable, Comparable {
    case browser, service, admin
    public static func < (a: Role, b: Role) -> Bool {
        let order: [Role] = [.browser, .service, .admin]
        return order.firstIndex(of: a)! < order.firstIndex(of: b)!
    }
}

/// Where the hub's bytes go: the socket layer, or a recording fake in tests.
public protocol HubTransport: AnyObject {
    /// The same bytes to every subscriber; `coalesceKey` lets a queued older frame be replaced.
    func send(_ bytes: [UInt8], to subscribers: [UInt64], coalesceKey: String?)
}

/// One numbered event as the hub hands it on: encoded once per format set in use, the same bytes for
/// everyone who asked for those formats.
public struct Publication {
    public let session: String
    /// Nil for a countdown: computed, not numbered.
    public let seq: Int?
    public let event: SessionEvent
    /// The frame in the standard formats (a QR's encoded when first needed: nobody may watch).
    public let frame: EncodedFrame
    public var bytes: [UInt8] { frame.bytes }
    /// A queued older frame with the same key may be replaced by this one.
    public let coalesceKey: String?
    /// For an event carrying a QR: its frame in other formats. Nil when the frame is the same for all.
    public let variant: ((QRFormats) -> [UInt8])?

    public init(session: String, seq: Int?, event: SessionEvent, bytes: [UInt8], coalesceKey: String?,
                variant: ((QRFormats) -> [UInt8])? = nil) {
        self.init(session: session, seq: seq, event: event, frame: EncodedFrame(bytes), coalesceKey: coalesceKey, variant: variant)
    }

    public init(session: String, seq: Int?, event: SessionEvent, frame: EncodedFrame, coalesceKey: String?,
                variant: ((QRFormats) -> [UInt8])? = nil) {
        self.session = session; self.seq = seq; self.event = event; self.frame = frame
        self.coalesceKey = coalesceKey; self.variant = variant
    }

    /// The frame for subscribers that asked for `formats`.
    public func bytes(for formats: QRFormats) -> [UInt8] {
        guard let variant, formats != .standard else { return bytes }
        return variant(formats)
    }
}

/// A consumer of every publication that formats events its own way (the Supabase endpoint), once per
/// event and topic rather than once per connection.
public protocol HubConsumer: AnyObject {
    func published(_ publication: Publication)
    func sessionAdded(_ session: String)
    /// Whether this consumer shows the session's countdown to anyone (countdowns are made only for
    /// sessions someone watches).
    func watches(_ session: String) -> Bool
    /// Whether `forEachWatchedSession` names every session `watches` is true for (else the hub takes it
    /// that the consumer may watch any).
    var listsWatchedSessions: Bool { get }
    /// Calls `body` for each session `watches` is true for (when `listsWatchedSessions`).
    func forEachWatchedSession(_ body: (String) -> Void)
    /// The pictures (`.svg`, `.png`) this consumer would show of the session's next QR now.
    func picturesWanted(_ session: String) -> QRFormats
}

extension HubConsumer {
    /// Both pictures for a session it watches (the standard frame), none otherwise.
    public func picturesWanted(_ session: String) -> QRFormats { watches(session) ? .standard : [] }
}

/// Subscriptions: session → subscribers with the formats each asked for, subscribers of every session
/// ("*"), subscribers of every session whose id starts with a prefix, plus consumers that take every
/// event. Single-threaded: owned by the loop that owns the sessions.
public final class Hub {
    public static let everySession = "*"
    private var bySession: [String: [UInt64: QRFormats]] = [:]
    private var bySubscriber: [UInt64: Set<String>] = [:]
    private var byPrefix: [String: [UInt64: QRFormats]] = [:]
    /// Prefix subscriptions per subscriber, counted: a tenant's "*" and its explicit subscription to the
    /// same prefix are two references to one entry, and dropping one keeps the other.
    private var prefixesOf: [UInt64: [String: Int]] = [:]
    public weak var transport: HubTransport?
    private var consumers: [HubConsumer] = []

    public init() {}

    /// Subscribes, or changes the formats of an existing subscription.
    public func subscribe(_ subscriber: UInt64, to session: String, formats: QRFormats = .standard) {
        bySession[session, default: [:]][subscriber] = formats
        bySubscriber[subscriber, default: []].insert(session)
    }

    /// Subscribes to every session whose id starts with `prefix`, present and future (one more reference).
    public func subscribe(_ subscriber: UInt64, prefix: String, formats: QRFormats = .standard) {
        byPrefix[prefix, default: [:]][subscriber] = formats
        prefixesOf[subscriber, default: [:]][prefix, default: 0] += 1
    }

    @discardableResult
    public func unsubscribe(_ subscriber: UInt64, from session: String) -> Bool {
        guard bySubscriber[subscriber]?.remove(session) != nil else { return false }
        bySession[session]?[subscriber] = nil
        if bySession[session]?.isEmpty == true { bySession[session] = nil }
        if bySubscriber[subscriber]?.isEmpty == true { bySubscriber[subscriber] = nil }
        return true
    }

    /// Drops one reference; the subscription ends with the last.
    @discardableResult
    public func unsubscribe(_ subscriber: UInt64, prefix: String) -> Bool {
        guard let n = prefixesOf[subscriber]?[prefix] else { return false }
        if n > 1 { prefixesOf[subscriber]?[prefix] = n - 1; return true }
        prefixesOf[subscriber]?[prefix] = nil
        byPrefix[prefix]?[subscriber] = nil
        if byPrefix[prefix]?.isEmpty == true { byPrefix[prefix] = nil }
        if prefixesOf[subscriber]?.isEmpty == true { prefixesOf[subscriber] = nil }
        return true
    }

    public func remove(_ subscriber: UInt64) {
        for s in bySubscriber.removeValue(forKey: subscriber) ?? [] {
            bySession[s]?[subscriber] = nil
            if bySession[s]?.isEmpty == true { bySession[s] = nil }
        }
        for p in (prefixesOf.removeValue(forKey: subscriber) ?? [:]).keys {
            byPrefix[p]?[subscriber] = nil
            if byPrefix[p]?.isEmpty == true { byPrefix[p] = nil }
        }
    }

    /// Sessions (and "*") the subscriber is subscribed to one by one.
    public func subscriptions(of subscriber: UInt64) -> Set<String> { bySubscriber[subscriber] ?? [] }

    public func isSubscribed(_ subscriber: UInt64, to session: String) -> Bool { bySubscriber[subscriber]?.contains(session) == true }

    /// Whether an event of `session` reaches the subscriber (directly, through "*" or a prefix).
    public func reaches(_ subscriber: UInt64, session: String) -> Bool {
        if isSubscribed(subscriber, to: session) || isSubscribed(subscriber, to: Hub.everySession) { return true }
        return prefixesOf[subscriber]?.keys.contains { session.hasPrefix($0) } ?? false
    }

    /// Direct subscribers of the session, subscribers of every session and of matching prefixes, each
    /// once, grouped by the formats they asked for (a direct subscription's formats win).
    public func audience(of session: String) -> [QRFormats: [UInt64]] {
        var out: [QRFormats: [UInt64]] = [:]
        let direct = bySession[session] ?? [:]
        for (id, f) in direct { out[f, default: []].append(id) }
        guard session != Hub.everySession else { return out }
        let star = bySession[Hub.everySession]
        var matching: [[UInt64: QRFormats]] = []
        for (p, subs) in byPrefix where session.hasPrefix(p) { matching.append(subs) }
        if matching.isEmpty {
            // The common case: no prefix subscriber, so "*" needs no de-duplication beyond `direct`.
            for (id, f) in star ?? [:] where direct[id] == nil { out[f, default: []].append(id) }
            return out
        }
        var extra: [UInt64: QRFormats] = [:]
        for subs in matching { for (id, f) in subs where direct[id] == nil { extra[id] = f } }
        for (id, f) in star ?? [:] where direct[id] == nil { extra[id] = f }
        for (id, f) in extra { out[f, default: []].append(id) }
        return out
    }

    /// Whether an event of the session reaches anyone: a subscriber (directly, "*", a prefix) or a consumer's.
    public func isWatched(_ session: String) -> Bool {
        if bySession[session]?.isEmpty == false || bySession[Hub.everySession]?.isEmpty == false { return true }
        if !byPrefix.isEmpty, byPrefix.keys.contains(where: { session.hasPrefix($0) }) { return true }
        return consumers.contains { $0.watches(session) }
    }

    /// Whether any session may be watched now (a subscriber, "*" or a prefix, or a consumer's watcher).
    public var watchesAny: Bool {
        if !bySession.isEmpty || !byPrefix.isEmpty { return true }
        for c in consumers {
            guard c.listsWatchedSessions else { return true }
            var any = false
            c.forEachWatchedSession { _ in any = true }
            if any { return true }
        }
        return false
    }

    /// The pictures (`.svg`, `.png`) an event of the session would be encoded with now: those its subscribers
    /// asked for, and those its consumers would show (the Supabase endpoint passes the standard frame on to
    /// a topic's members, and its rows carry the PNG); none when nobody watches, so a new code is drawn only when someone will see it.
    public func picturesWanted(_ session: String) -> QRFormats {
        var wanted: QRFormats = []
        for c in consumers { wanted.formUnion(c.picturesWanted(session)) }
        for formats in audience(of: session).keys { wanted.formUnion(formats) }
        return wanted.intersection(.standard)
    }

    public var subscriptionCount: Int {
        bySubscriber.values.reduce(0) { $0 + $1.count } + prefixesOf.values.reduce(0) { $0 + $1.count }
    }

    public func add(consumer: HubConsumer) { consumers.append(consumer) }

    /// One transport call per distinct frame: a QR-bearing event is encoded once per format set in use,
    /// any other event once for everyone; then each consumer.
    public func publish(_ p: Publication) {
        let groups = audience(of: p.session)
        if let transport, !groups.isEmpty {
            if p.variant == nil {
                transport.send(p.bytes, to: groups.count == 1 ? groups.first!.value : groups.values.flatMap { $0 }, coalesceKey: p.coalesceKey)
            } else {
                for (formats, ids) in groups { transport.send(p.bytes(for: formats), to: ids, coalesceKey: p.coalesceKey) }
            }
        }
        for c in consumers { c.published(p) }
    }

    /// An unnumbered notice about a session (not an event: no seq, not logged) to its socket subscribers.
    public func notice(_ bytes: [UInt8], session: String) {
        let ids = audience(of: session).values.flatMap { $0 }
        if let transport, !ids.isEmpty { transport.send(bytes, to: ids, coalesceKey: nil) }
    }

    public func sessionAdded(_ session: String) {
        for c in consumers { c.sessionAdded(session) }
    }
}
