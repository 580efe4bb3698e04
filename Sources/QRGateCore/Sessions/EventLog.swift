import Foundation

/// The recent events of one session, for `since` recovery: bounded by count, by bytes, and to one QR frame
/// (the newest).
public struct EventLog: Sendable {
    public struct Entry: Sendable {
        public let seq: Int
        public let action: String
        /// The frame in the standard formats (encoded when first read, for a QR).
        public let frame: EncodedFrame
        public var bytes: [UInt8] { frame.bytes }
        /// What the entry counts for in the log's byte bound, fixed when it is made: its frame's size, or
        /// `unencodedQRWeight` for a QR frame not encoded yet.
        public let weight: Int
        /// The event and when it happened, so a QR-bearing frame can be re-encoded for other `formats`;
        /// nil for entries restored from the store (their bytes are all that was kept).
        public let event: SessionEvent?
        public let at: Date?
        public init(seq: Int, action: String, bytes: [UInt8], event: SessionEvent? = nil, at: Date? = nil) {
            self.init(seq: seq, action: action, frame: EncodedFrame(bytes), event: event, at: at)
        }
        public init(seq: Int, action: String, frame: EncodedFrame, event: SessionEvent? = nil, at: Date? = nil) {
            self.seq = seq; self.action = action; self.frame = frame; self.event = event; self.at = at
            weight = frame.countIfEncoded ?? EventLog.unencodedQRWeight
        }
    }
    /// What a QR frame not encoded yet counts for: about a standard frame with both pictures (the log
    /// keeps one QR frame whatever its size, so this only decides how many small events fit beside it).
    public static let unencodedQRWeight = 12 * 1024
    public let capacity: Int
    /// The frames kept weigh at most this many bytes (the newest is kept whatever its size).
    public let maxBytes: Int
    private var entries: [Entry] = []
    public private(set) var bytes = 0

    public init(capacity: Int, maxBytes: Int = EventLog.defaultMaxBytes) {
        self.capacity = max(1, capacity)
        self.maxBytes = max(1, maxBytes)
    }

    /// One QR frame and a few hundred small events fit with room to spare.
    public static let defaultMaxBytes = 256 * 1024

    public mutating func append(_ e: Entry) {
        // A new QR supersedes the older ones: the log drops everything up to the previous QR (or its pairing
        // code), so it stays contiguous and holds one QR frame however many rotations there were; a client
        // behind that point gets a snapshot, which carries the same QR.
        if e.action == "qr_generated", let last = entries.lastIndex(where: { $0.action == "qr_generated" || $0.action == "pairing_code" }) {
            dropFirst(last + 1)
        }
        entries.append(e)
        bytes += e.weight
        if entries.count > capacity { dropFirst(entries.count - capacity) }
        // Oldest first, so the log stays a contiguous tail.
        var over = 0, excess = bytes - maxBytes
        while excess > 0 && over < entries.count - 1 {
            excess -= entries[over].weight
            over += 1
        }
        if over > 0 { dropFirst(over) }
    }

    private mutating func dropFirst(_ n: Int) {
        bytes -= entries[..<n].reduce(0) { $0 + $1.weight }
        entries.removeFirst(n)
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
