import Foundation

/// The recent events of one session, for `since` recovery: bounded by count, and to one QR frame (the newest).
public struct EventLog: Sendable {
    public struct Entry: Sendable {
        public let seq: Int
        public let action: String
        /// The frame in the standard formats.
        public let bytes: [UInt8]
        /// The event and when it happened, so a QR-bearing frame can be re-encoded for other `formats`;
        /// nil for entries restored from the store (their bytes are all that was kept).
        public let event: SessionEvent?
        public let at: Date?
        public init(seq: Int, action: String, bytes: [UInt8], event: SessionEvent? = nil, at: Date? = nil) {
            self.seq = seq; self.action = action; self.bytes = bytes; self.event = event; self.at = at
        }
    }
    public let capacity: Int
    private var entries: [Entry] = []

    public init(capacity: Int) { self.capacity = max(1, capacity) }

    public mutating func append(_ e: Entry) {
        // A new QR supersedes the older ones: the log drops everything up to the previous QR (or its pairing
        // code), so it stays contiguous and holds one QR frame however many rotations there were; a client
        // behind that point gets a snapshot, which carries the same QR.
        if e.action == "qr_generated", let last = entries.lastIndex(where: { $0.action == "qr_generated" || $0.action == "pairing_code" }) {
            entries.removeFirst(last + 1)
        }
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
