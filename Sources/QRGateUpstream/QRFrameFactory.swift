import DequeModule
import Foundation
import QRGateCore
import QRGateQR
import Synchronization

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
    /// Pictures drawn so far, by kind (`qrgate_qr_pictures_drawn_total`): a fleet nobody watches draws none.
    public let drawn = DrawCounts()

    /// Running totals, each its own atomic (pictures are drawn on the loops and the global pool).
    public final class DrawCounts: Sendable {
        public let svg = Atomic<Int>(0)
        public let png = Atomic<Int>(0)
    }

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

    /// The frame for a code, its pictures drawn now for `formats` (the rest when first wanted). Milliseconds
    /// for a new code: called off the loops (`SessionRuntime.input`, on the global pool).
    public func frame(for qr: UpstreamQR, drawing formats: QRFormats) throws -> SessionQR {
        let f = try frame(for: qr)
        f.pictures.prepare(formats)
        return f
    }

    /// The frame for a code, its pictures drawn when first wanted (a code nobody watches is never drawn).
    /// Throws now for a code that cannot be drawn (empty, a NUL, too long for a QR symbol).
    public func frame(for qr: UpstreamQR) throws -> SessionQR {
        lock.lock()
        if let hit = cache[qr.code] { lock.unlock(); return Self.paired(hit, qr) }
        lock.unlock()
        try QRMatrix.check(qr.code, correction: renderer.style.correction)
        let upstreamPNG = qr.base64.flatMap { Self.isWellFormedPNGDataURL($0, limit: maxDataURLBytes) ? $0 : nil }
        let renderer = renderer, code = qr.code, counts = drawn
        let pictures = QRPictures(png: upstreamPNG) { formats in
            // One matrix for the pictures asked for together; a failure leaves them empty (a frame shows no
            // picture rather than none of its other fields).
            guard let matrix = try? QRMatrix(encoding: code, correction: renderer.style.correction) else { return (nil, nil) }
            let svg = formats.contains(.svg) ? renderer.svg(matrix) : nil
            let png = formats.contains(.png) ? try? renderer.pngDataURL(matrix) : nil
            if svg != nil { counts.svg.add(1, ordering: .relaxed) }
            if png != nil { counts.png.add(1, ordering: .relaxed) }
            return (svg, png)
        }
        let frame = SessionQR(code: qr.code, pictures: pictures, upstreamImage: upstreamPNG != nil)
        lock.lock()
        defer { lock.unlock() }
        // Two threads that made the same code's frame at once share the first one cached (and its drawing).
        if let hit = cache[qr.code] { return Self.paired(hit, qr) }
        cache[qr.code] = frame
        order.append(qr.code)
        if order.count > capacity { cache[order.removeFirst()] = nil }
        return Self.paired(frame, qr)
    }

    /// `data:image/png;base64,` + valid base64 of bytes that start with the PNG signature, within `limit`.
    public static func isWellFormedPNGDataURL(_ s: String, limit: Int) -> Bool {
        guard s.utf8.count <= limit, s.hasPrefix(pngPrefix) else { return false }
        guard let data = Data(base64Encoded: String(s.dropFirst(pngPrefix.count))), data.count > 8 else { return false }
        return data.prefix(8).elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
    }
}
