import Foundation
import HeapModule
import QRGateCore

/// Many deadlines on the event loop's single libwebsockets timer: a heap of due times, the lws timer
/// always armed for the earliest. Due times come from the injected clock, so a test with a
/// `ManualClock` fires them by advancing the clock and calling `fire`.
/// Not Sendable: owned by the actor of one loop, and its actions run isolated to that actor.
public final class LoopTimers {
    public typealias ID = UInt64
    /// Runs on the owning actor: actions are formed in methods isolated to it (they capture its
    /// `isolation` parameter), and the timers never leave that actor's region.
    public typealias Action = () -> Void
    private struct Entry: Comparable {
        let due: Date
        let id: ID
        static func < (a: Entry, b: Entry) -> Bool { a.due == b.due ? a.id < b.id : a.due < b.due }
    }

    public let clock: any GatewayClock
    private var heap = Heap<Entry>()
    private var actions: [ID: Action] = [:]
    private var nextID: ID = 1
    private let arm: (Int64) -> Void
    private var armedFor: Date?

    /// `arm(µs)` must make the loop call `fire()` after that many microseconds.
    public init(clock: any GatewayClock, arm: @escaping (Int64) -> Void) {
        self.clock = clock
        self.arm = arm
    }

    public var count: Int { actions.count }

    @discardableResult
    public func schedule(after seconds: Double, _ action: @escaping Action) -> ID {
        schedule(at: clock.now().addingTimeInterval(max(0, seconds)), action)
    }

    @discardableResult
    public func schedule(at due: Date, _ action: @escaping Action) -> ID {
        let id = nextID
        nextID += 1
        heap.insert(Entry(due: due, id: id))
        actions[id] = action
        rearm()
        return id
    }

    public func cancel(_ id: ID) { actions[id] = nil }

    /// Runs what is due and re-arms for the rest.
    public func fire() {
        armedFor = nil
        let now = clock.now()
        while let top = heap.min, top.due <= now {
            heap.removeMin()
            if let action = actions.removeValue(forKey: top.id) { action() }
        }
        rearm()
    }

    private func rearm() {
        while let top = heap.min, actions[top.id] == nil { heap.removeMin() } // drop cancelled
        guard let top = heap.min else { return }
        if let armed = armedFor, armed <= top.due { return }
        armedFor = top.due
        let us = Int64((top.due.timeIntervalSince(clock.now()) * 1_000_000).rounded(.up))
        arm(max(0, us))
    }
}
