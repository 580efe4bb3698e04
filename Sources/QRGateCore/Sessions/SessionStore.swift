import Foundation

/// A session as stored: everything needed to continue it after a restart.
public struct StoredSession: Sendable, Equatable {
    public var id: String
    public var instanceName: String
    /// Kept encrypted at rest by the SQLite store; never logged.
    public var instanceToken: String?
    public var numberId: String?
    /// The phone number it links with by pairing code; kept encrypted at rest like the token.
    public var phoneNumber: String?
    public var state: SessionMachine.Persisted
    public var seq: Int
    public var createdAt: Date
    public var lastActiveAt: Date

    public init(id: String, instanceName: String, instanceToken: String?, numberId: String?, phoneNumber: String? = nil,
                state: SessionMachine.Persisted, seq: Int, createdAt: Date, lastActiveAt: Date) {
        self.id = id; self.instanceName = instanceName; self.instanceToken = instanceToken; self.numberId = numberId
        self.phoneNumber = phoneNumber; self.state = state; self.seq = seq; self.createdAt = createdAt; self.lastActiveAt = lastActiveAt
    }
}

/// One logged event, as its encoded bytes.
public struct StoredEvent: Sendable, Equatable {
    public var sessionId: String
    public var seq: Int
    public var action: String
    public var payload: [UInt8]
    public var at: Date

    public init(sessionId: String, seq: Int, action: String, payload: [UInt8], at: Date) {
        self.sessionId = sessionId; self.seq = seq; self.action = action; self.payload = payload; self.at = at
    }
}

/// The outcome of one refresh cycle, kept for operators.
public struct StoredCycle: Sendable, Equatable {
    public var startedAt: Date
    public var durationMs: Int
    public var total: Int
    public var refreshed: Int
    public var failed: Int
    public init(startedAt: Date, durationMs: Int, total: Int, refreshed: Int, failed: Int) {
        self.startedAt = startedAt; self.durationMs = durationMs; self.total = total; self.refreshed = refreshed; self.failed = failed
    }
}

/// Where sessions live between restarts: SQLite, PostgreSQL or memory, the core unchanged.
/// Writes run off the event loop; `completion` runs on the store's own thread once durable.
public protocol SessionStore: AnyObject, Sendable {
    /// Every stored session with its recent events (oldest first).
    func loadAll() async throws -> [(StoredSession, [StoredEvent])]
    func write(_ session: StoredSession, events: [StoredEvent], completion: @escaping @Sendable (Error?) -> Void)
    func recordCycle(_ cycle: StoredCycle)
    func recentCycles(limit: Int) async throws -> [StoredCycle]
    /// A short description for /readyz; nil when healthy.
    func problem() -> String?
    /// Waits for queued writes and closes.
    func close()
    /// Whether a write survives the process (events are published only once written). Default true.
    var isDurable: Bool { get }
}

extension SessionStore {
    public var isDurable: Bool { true }
}

/// Keeps everything in memory (`store.mode = memory`): for tests and throw-away demos.
public final class MemoryStore: SessionStore, @unchecked Sendable {
    private let lock = NSLock()
    private var sessions: [String: StoredSession] = [:]
    private var events: [String: [StoredEvent]] = [:]
    private var cycles: [StoredCycle] = []
    private let capacity: Int

    public init(eventCapacity: Int = 256) { capacity = eventCapacity }

    public func loadAll() throws -> [(StoredSession, [StoredEvent])] {
        lock.lock(); defer { lock.unlock() }
        return sessions.values.sorted { $0.id < $1.id }.map { ($0, events[$0.id] ?? []) }
    }

    public func write(_ session: StoredSession, events new: [StoredEvent], completion: @escaping @Sendable (Error?) -> Void) {
        lock.lock()
        sessions[session.id] = session
        var list = events[session.id, default: []] + new
        if list.count > capacity { list.removeFirst(list.count - capacity) }
        events[session.id] = list
        lock.unlock()
        completion(nil)
    }

    public func recordCycle(_ cycle: StoredCycle) {
        lock.lock(); cycles.append(cycle); if cycles.count > 100 { cycles.removeFirst() }; lock.unlock()
    }

    public func recentCycles(limit: Int) throws -> [StoredCycle] {
        lock.lock(); defer { lock.unlock() }
        return Array(cycles.suffix(limit).reversed())
    }

    public func problem() -> String? { nil }
    public func close() {}
    /// Nothing outlives the process: events are published at once.
    public var isDurable: Bool { false }
}
