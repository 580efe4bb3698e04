import HeapModule

/// Many deadlines on the event loop's single libwebsockets timer: a heap of due times,
/// the lws timer always armed for the earliest. Loop-confined.
public final class LoopTimers {
    public typealias ID = UInt64
    private struct Entry: Comparable {
        let due: ContinuousClock.Instant
        let id: ID
        static func < (a: Entry, b: Entry) -> Bool { a.due == b.due ? a.id < b.id : a.due < b.due }
    }

    private var heap = Heap<Entry>()
    private var actions: [ID: () -> Void] = [:]
    private var nextID: ID = 1
    private let arm: (Int64) -> Void
    private var armedFor: ContinuousClock.Instant?

    /// `arm(µs)` must make the loop call `fire()` after that many microseconds.
    public init(arm: @escaping (Int64) -> Void) { self.arm = arm }

    public var count: Int { actions.count }

    @discardableResult
    public func schedule(after seconds: Double, _ action: @escaping () -> Void) -> ID {
        let id = nextID
        nextID += 1
        let due = ContinuousClock.now.advanced(by: .milliseconds(Int64((max(0, seconds) * 1000).rounded())))
        heap.insert(Entry(due: due, id: id))
        actions[id] = action
        rearm()
        return id
    }

    public func cancel(_ id: ID) { actions[id] = nil }

    /// Runs what is due and re-arms for the rest.
    public func fire() {
        armedFor = nil
        let now = ContinuousClock.now
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
        let d = top.due - ContinuousClock.now
        let us = d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000
        arm(max(0, us))
    }
}
