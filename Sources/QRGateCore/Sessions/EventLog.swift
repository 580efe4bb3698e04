/// The recent events of one session, for `since` recovery: bounded by count.
public struct EventLog: Sendable {
    public struct Entry: Sendable {
        public let seq: Int
        public let action: String
        public let bytes: [UInt8]
    }
    public let capacity: Int
    private var entries: [Entry] = []

    public init(capacity: Int) { self.capacity = max(1, capacity) }

    public mutating func append(_ e: Entry) {
        entries.append(e)
        if entries.count > capacity { entries.removeFirst(entries.count - capacity) }
    }

    /// Every kept event after `seq`, countdowns included.
    public func entries(after seq: Int) -> [Entry] {
        // Usually one or two new entries at the end: walk back instead of filtering the whole log.
        var i = entries.endIndex
        while i > entries.startIndex, entries[i - 1].seq > seq { i -= 1 }
        return Array(entries[i...])
    }

    /// Events after `since`, or nil when some of them are gone (or `since` is from the future).
    /// Countdowns a client missed are stale, so only the newest one is replayed.
    public func after(_ since: Int, lastSeq: Int) -> [Entry]? {
        if since == lastSeq { return [] }
        guard since < lastSeq, let first = entries.first, first.seq <= since + 1 else { return nil }
        let missed = entries.filter { $0.seq > since }
        let lastCountdown = missed.lastIndex { $0.action == "countdown" }
        return missed.enumerated().filter { $0.element.action != "countdown" || $0.offset == lastCountdown }.map(\.element)
    }
}
