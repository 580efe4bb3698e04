/// One peer's unsent frames: first in, first out, counted in bytes, with coalescing by key.
///
/// A frame pushed with a key replaces the unsent frame with the same key (the newest countdown or QR of
/// a session is all a peer that is behind needs). The older one is dropped and the new one goes last, so
/// the frames still leave in the order they were numbered. Frames without a key (state changes) are
/// never dropped. Every operation is O(1) amortised: the firehose subscriber of thousands of sessions
/// coalesces on every push.
///
/// Pure Swift, one owner (the loop that owns the peer).
public struct Outbox<Frame> {
    private struct Slot {
        var frame: Frame
        var size: Int
        var key: String?
        /// The owner wants to hear when this frame has been written.
        var marker: Bool
    }

    /// Slots from `head` on are live or holes (coalesced away); positions are absolute (`base + index`).
    private var slots: [Slot?] = []
    private var head = 0
    private var base = 0
    private var positions: [String: Int] = [:]

    /// Unsent payload bytes.
    public private(set) var bytes = 0
    /// Unsent frames.
    public private(set) var count = 0

    public init() {}

    public var isEmpty: Bool { count == 0 }

    /// Queues a frame; returns true when an older frame with the same key was dropped for it.
    @discardableResult
    public mutating func push(_ frame: Frame, size: Int, key: String? = nil, marker: Bool = false) -> Bool {
        var coalesced = false
        if let key, let at = positions[key], let old = slots[at - base] {
            if old.marker {
                // Someone waits for the older frame to be written: it stays, and no longer coalesces.
                slots[at - base]?.key = nil
            } else {
                bytes -= old.size
                count -= 1
                slots[at - base] = nil
                coalesced = true
            }
        }
        slots.append(Slot(frame: frame, size: size, key: key, marker: marker))
        if let key { positions[key] = base + slots.count - 1 }
        bytes += size
        count += 1
        // Coalescing leaves holes that only `pop` reclaims; a reader that takes nothing would grow the
        // array by one slot per event. Past as many holes as frames, the live slots are packed.
        if slots.count - head - count > max(64, count) { pack() }
        return coalesced
    }

    /// Slots in use, holes included (for tests: stays within twice the frames, plus a little).
    public var capacityInUse: Int { slots.count - head }

    private mutating func pack() {
        var packed: [Slot?] = []
        packed.reserveCapacity(count)
        positions.removeAll(keepingCapacity: true)
        for case let slot? in slots[head...] {
            if let key = slot.key { positions[key] = packed.count }
            packed.append(slot)
        }
        slots = packed
        head = 0
        base = 0
    }

    /// The oldest unsent frame, and whether its owner asked to hear when it is written.
    public mutating func pop() -> (frame: Frame, marker: Bool)? {
        while head < slots.count {
            let slot = slots[head]
            slots[head] = nil
            head += 1
            guard let slot else { continue }
            if let key = slot.key, positions[key] == base + head - 1 { positions[key] = nil }
            bytes -= slot.size
            count -= 1
            compact()
            return (slot.frame, slot.marker)
        }
        compact()
        return nil
    }

    /// Drops everything (the peer is being closed).
    public mutating func removeAll() {
        slots.removeAll()
        positions.removeAll()
        base += head
        head = 0
        bytes = 0
        count = 0
    }

    private mutating func compact() {
        if head == slots.count {
            base += head
            slots.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= slots.count {
            slots.removeFirst(head)
            base += head
            head = 0
        }
    }
}
