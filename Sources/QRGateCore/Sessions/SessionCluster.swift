import Foundation

/// Several gateway nodes sharing one database (`store.mode = postgres`): which node runs a session (its
/// lease), the bus that tells every node what changed, and orders from a node that does not run a session
/// to the one that does. The core only sees this protocol; the PostgreSQL store implements it with a lease
/// column, LISTEN/NOTIFY and a read of the events table. SQLite and memory run without one (one node runs all).
public protocol SessionCluster: AnyObject, Sendable {
    /// This node's name in the leases and on the bus.
    var nodeId: String { get }
    /// Starts the leases and the bus; `signal` is called (from the cluster's own tasks) with what happens.
    func start(_ signal: @escaping @Sendable (ClusterSignal) -> Void)
    /// Sends an order or a reply to another node (over the bus).
    func send(_ message: ClusterMessage) async throws
    /// The stored sessions with their events after the given seq (nil: all kept), and their owners.
    func fetch(_ wanted: [String: Int?]) async throws -> [ClusterSnapshot]
    /// Hands back leases this node holds but does not run (the runtime found them at a renewal).
    func giveBack(_ sessions: [String]) async
    /// Hands back every lease this node holds (a clean stop; if the database is away they lapse by themselves).
    func releaseAll() async
    /// Cluster gauges and counters for /metrics, and what /readyz should report (nil: healthy).
    func stats() -> ClusterStats
    func stop()
}

/// A session as another node stored it, with the events after what this node has and who runs it.
public struct ClusterSnapshot: Sendable {
    public var session: StoredSession
    public var events: [StoredEvent]
    public var owner: String?
    public init(session: StoredSession, events: [StoredEvent], owner: String?) {
        self.session = session; self.events = events; self.owner = owner
    }
}

/// What the cluster reports to its node.
public enum ClusterSignal: Sendable {
    /// These sessions are now this node's to run (new leases, or leases that lapsed elsewhere), as stored.
    case claimed([ClusterSnapshot])
    /// This node no longer runs these sessions: another node took them, or the leases could not be renewed.
    case lost([String], reason: String)
    /// Another node committed a session's events up to `seq`.
    case changed(session: String, seq: Int, node: String)
    /// After the bus (re)connected: every session's stored seq and owner, to catch up on what was missed.
    case resync([String: (seq: Int, owner: String?)])
    /// An order for this node, or a reply to one of its orders.
    case message(ClusterMessage)
    /// A round renewed these leases (the runtime checks it runs each of them).
    case renewed(Set<String>)
}

/// An order from one node to the node that runs a session, or its reply. Payloads are small JSON (a
/// NOTIFY carries at most 8000 bytes): the caller reads the session's new state from the database.
public enum ClusterMessage: Sendable, Equatable {
    case order(to: String, from: String, id: Int, payload: String)
    case reply(to: String, id: Int, payload: String)
}

public struct ClusterStats: Sendable {
    public var renewals: Int = 0
    public var renewalFailures: Int = 0
    public var claims: Int = 0
    /// Sessions handed to other nodes because this one ran more than its share.
    public var handoffs: Int = 0
    public var busMessages: Int = 0
    /// Seconds between a change's commit on its owner and this node reading it, the last one seen.
    public var busLagSeconds: Double = 0
    public var liveNodes: Int = 0
    public var problem: String?
    public init() {}
}

/// A write refused because another node holds the session's lease now.
public struct LeaseLost: Error, CustomStringConvertible {
    public let session: String
    public init(session: String) { self.session = session }
    public var description: String { "session \(session) is run by another node now (its lease moved)" }
}
