import Synchronization

/// An event's frame in the standard formats, encoded when first needed and kept: a QR's standard frame
/// carries its SVG and PNG, which a session nobody watches never needs drawn (the store keeps the code,
/// and a subscriber with other formats gets its own encoding). Other frames are encoded at once.
public final class EncodedFrame: Sendable {
    /// Guards the bytes once encoded: the log's entries are Sendable and read where a replay is built.
    private let encoded: Mutex<[UInt8]?>
    private let encode: (@Sendable () -> [UInt8])?

    public init(_ bytes: [UInt8]) {
        encoded = Mutex(bytes)
        encode = nil
    }

    public init(encode: @escaping @Sendable () -> [UInt8]) {
        encoded = Mutex(nil)
        self.encode = encode
    }

    public var bytes: [UInt8] {
        if let b = encoded.withLock({ $0 }) { return b }
        // Encoded outside the lock (it may draw a picture); the same bytes whoever encodes first.
        let b = encode?() ?? []
        return encoded.withLock { e in
            if e == nil { e = b }
            return e!
        }
    }

    /// The size once encoded, else nil.
    public var countIfEncoded: Int? { encoded.withLock { $0?.count } }
}
