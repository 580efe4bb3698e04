import DequeModule
import Foundation
import QRGateCore
import QRGateQR

/// Builds frames from upstream codes, rendering what the upstream did not give, and
/// remembering recent codes so the same code always yields the same frame (no duplicate pushes).
public final class QRFrameFactory: @unchecked Sendable {
    public static let pngPrefix = "data:image/png;base64,"
    /// Largest upstream data URL kept (a WhatsApp QR PNG is ~5–15 KB).
    public let maxDataURLBytes: Int
    private let renderer: QRRenderer
    private let lock = NSLock()
    private var cache: [String: SessionQR] = [:]
    /// Oldest first: a full cache drops its front in O(1) (an array's `removeFirst` moved 4 095 keys per insert).
    private var order: Deque<String> = []
    private let capacity: Int

    public init(renderer: QRRenderer, maxDataURLBytes: Int = 256 * 1024, capacity: Int = 4096) {
        self.renderer = renderer
        self.maxDataURLBytes = maxDataURLBytes
        self.capacity = capacity
    }

    /// The frame for a code rendered before, if it is still remembered (a lock and a lookup).
    public func cached(_ qr: UpstreamQR) -> SessionQR? {
        lock.lock()
        let hit = cache[qr.code]
        lock.unlock()
        return hit.map { Self.paired($0, qr) }
    }

    /// The frame with the pairing code this answer carried (pictures are cached by code; pairing codes
    /// rotate on their own and are not).
    public static func paired(_ frame: SessionQR, _ qr: UpstreamQR) -> SessionQR {
        var f = frame
        f.pairingCode = PairingCode.normalize(qr.pairingCode)
        return f
    }

    /// `frame(for:)` on the global pool: encoding and PNG compression take milliseconds, which an event
    /// loop must not spend while thousands of sockets wait on it.
    @concurrent
    public func render(_ qr: UpstreamQR) async throws -> SessionQR { try frame(for: qr) }

    public func frame(for qr: UpstreamQR) throws -> SessionQR {
        lock.lock()
        if let hit = cache[qr.code] { lock.unlock(); return Self.paired(hit, qr) }
        lock.unlock()
        let matrix = try QRMatrix(encoding: qr.code, correction: renderer.style.correction)
        let upstreamPNG = qr.base64.flatMap { Self.isWellFormedPNGDataURL($0, limit: maxDataURLBytes) ? $0 : nil }
        let frame = SessionQR(code: qr.code, pngDataURL: try upstreamPNG ?? renderer.pngDataURL(matrix), svg: renderer.svg(matrix),
                              upstreamImage: upstreamPNG != nil)
        lock.lock()
        if cache[qr.code] == nil {
            cache[qr.code] = frame
            order.append(qr.code)
            if order.count > capacity { cache[order.removeFirst()] = nil }
        }
        lock.unlock()
        return Self.paired(frame, qr)
    }

    /// `data:image/png;base64,` + valid base64 of bytes that start with the PNG signature, within `limit`.
    public static func isWellFormedPNGDataURL(_ s: String, limit: Int) -> Bool {
        guard s.utf8.count <= limit, s.hasPrefix(pngPrefix) else { return false }
        guard let data = Data(base64Encoded: String(s.dropFirst(pngPrefix.count))), data.count > 8 else { return false }
        return data.prefix(8).elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
    }
}
