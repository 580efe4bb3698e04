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

/// One numbered event as the hub hands it on: encoded once, the same bytes for everyone.
public struct Publication {
    public let session: String
    public let seq: Int
    public let event: SessionEvent
    public let bytes: [UInt8]
    /// A queued older frame with the same key may be replaced by this one.
    public let coalesceKey: String?
}

/// A consumer of every publication that formats events its own way (the Supabase endpoint), once per
/// event and topic rather than once per connection.
public protocol HubConsumer: AnyObject {
    func published(_ publication: Publication)
    func sessionAdded(_ session: String)
}

/// Subscriptions: session → subscribers, plus subscribers of every session ("*"), plus consumers that
/// take every event. Single-threaded: owned by the loop that owns the sessions.
public final class Hub {
    public static let everySession = "*"
    private var bySession: [String: Set<UInt64>] = [:]
    private var bySubscriber: [UInt64: Set<String>] = [:]
    public weak var transport: HubTransport?
    private var consumers: [HubConsumer] = []

    public init() {}

    public func subscribe(_ subscriber: UInt64, to session: String) {
        bySession[session, default: []].insert(subscriber)
        bySubscriber[subscriber, default: []].insert(session)
    }

    @discardableResult
    public func unsubscribe(_ subscriber: UInt64, from session: String) -> Bool {
        guard bySubscriber[subscriber]?.remove(session) != nil else { return false }
        bySession[session]?.remove(subscriber)
        if bySession[session]?.isEmpty == true { bySession[session] = nil }
        return true
    }

    public func remove(_ subscriber: UInt64) {
        for s in bySubscriber.removeValue(forKey: subscriber) ?? [] {
            bySession[s]?.remove(subscriber)
            if bySession[s]?.isEmpty == true { bySession[s] = nil }
        }
    }

    public func subscriptions(of subscriber: UInt64) -> Set<String> { bySubscriber[subscriber] ?? [] }

    public func isSubscribed(_ subscriber: UInt64, to session: String) -> Bool { bySubscriber[subscriber]?.contains(session) == true }

    /// Direct subscribers of the session and subscribers of every session, each once.
    public func audience(of session: String) -> [UInt64] {
        let direct = bySession[session] ?? []
        let all = bySession[Hub.everySession] ?? []
        return Array(direct.union(all))
    }

    public var subscriptionCount: Int { bySubscriber.values.reduce(0) { $0 + $1.count } }

    public func add(consumer: HubConsumer) { consumers.append(consumer) }

    /// Encoded once by the caller; one transport call fans the same bytes out, then each consumer.
    public func publish(_ p: Publication) {
        let audience = audience(of: p.session)
        if !audience.isEmpty { transport?.send(p.bytes, to: audience, coalesceKey: p.coalesceKey) }
        for c in consumers { c.published(p) }
    }

    public func sessionAdded(_ session: String) {
        for c in consumers { c.sessionAdded(session) }
    }
}
