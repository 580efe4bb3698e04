private import CWebSockets
import Foundation

/// One encoded WebSocket text message, with libwebsockets' LWS_PRE head-room in front.
/// Built once per event and shared by every subscriber it goes to on one loop; another loop gets its
/// own copy (`init(copying:)`), because lws writes each frame's header into the head-room.
///
/// `@unchecked Sendable`: the payload is immutable after `init`; the head-room is written only by the
/// loop the frame was made on or copied to.
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

    /// A private copy for another loop: the payload only (its head-room is the original loop's to write).
    init(copying other: WireFrame) {
        isBinary = other.isBinary
        count = other.count
        let pre = Int(qg_lws_pre())
        storage = .allocate(byteCount: pre + max(count, 1), alignment: 16)
        // The head-room is zeroed; the payload is written once, by the copy.
        UnsafeMutableRawBufferPointer(rebasing: storage[..<pre]).initializeMemory(as: UInt8.self, repeating: 0)
        UnsafeMutableRawBufferPointer(rebasing: storage[pre...])
            .copyMemory(from: UnsafeRawBufferPointer(rebasing: other.storage[pre..<(pre + max(count, 1))]))
    }

    deinit { storage.deallocate() }

    /// Writes it as one message. lws fills the head-room with the frame header,
    /// which is why this only ever runs on the service thread.
    func write(to wsi: OpaquePointer) -> Int32 {
        let pre = Int(qg_lws_pre())
        let p = storage.baseAddress!.advanced(by: pre).assumingMemoryBound(to: UInt8.self)
        return lws_write(wsi, p, count, isBinary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT)
    }
}
