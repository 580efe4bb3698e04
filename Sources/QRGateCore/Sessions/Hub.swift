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

/// Subscriptions: session → subscribers, plus subscribers of every session ("*").
public final class Hub {
    public static let everySession = "*"
    private var bySession: [String: Set<UInt64>] = [:]
    private var bySubscriber: [UInt64: Set<String>] = [:]
    public weak var transport: HubTransport?

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

    /// Encoded once by the caller; one transport call fans the same bytes out.
    public func publish(_ bytes: [UInt8], session: String, coalesceKey: String?) {
        let audience = audience(of: session)
        guard !audience.isEmpty else { return }
        transport?.send(bytes, to: audience, coalesceKey: coalesceKey)
    }
}
