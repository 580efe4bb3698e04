private import CWebSockets
import Foundation

/// One encoded WebSocket text message, with libwebsockets' LWS_PRE head-room in front.
/// Built once per event and shared by every subscriber it goes to.
public final class WireFrame: @unchecked Sendable {
    private let storage: UnsafeMutableRawBufferPointer
    public let count: Int
    /// Sent as a binary message instead of text.
    public let isBinary: Bool

    public init(_ payload: some Collection<UInt8>, binary: Bool = false) {
        isBinary = binary
        let pre = Int(qg_lws_pre())
        count = payload.count
        storage = .allocate(byteCount: pre + max(count, 1), alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
        UnsafeMutableRawBufferPointer(rebasing: storage[pre...]).copyBytes(from: payload)
    }

    public convenience init(_ text: String) { self.init(Array(text.utf8)) }

    deinit { storage.deallocate() }

    /// Writes it as one message. lws fills the head-room with the frame header,
    /// which is why this only ever runs on the service thread.
    func write(to wsi: OpaquePointer) -> Int32 {
        let pre = Int(qg_lws_pre())
        let p = storage.baseAddress!.advanced(by: pre).assumingMemoryBound(to: UInt8.self)
        return lws_write(wsi, p, count, isBinary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT)
    }
}
