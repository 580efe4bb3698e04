import Synchronization

/// The pictures of one QR code (SVG markup, PNG data URL), drawn when first wanted and kept. A code's
/// pictures are a pure function of it (or the upstream's PNG, given at creation), so a fleet whose QRs
/// nobody watches draws none: they are drawn for a subscriber's frame, a replay, a REST read or a row.
/// Shared between every copy of a `SessionQR` (and the factory's cache), so each is drawn once.
public final class QRPictures: Sendable {
    /// Draws the asked-for pictures (`.svg`, `.png`; one matrix for both): nil for one it cannot draw.
    public typealias Draw = @Sendable (QRFormats) -> (svg: String?, png: String?)

    private struct Drawn: Sendable {
        var svg: String?
        var png: String?
    }

    /// Guards the drawn pictures: frames are encoded on the loops, pictures may be prepared on the pool.
    private let drawn: Mutex<Drawn>
    private let draw: Draw?

    /// Pictures already drawn ("" for one the holder does not have: a QR read back from a store).
    public init(svg: String, png: String) {
        drawn = Mutex(Drawn(svg: svg, png: png))
        draw = nil
    }

    /// Pictures drawn on demand; `png` is the upstream's when it sent one (then only the SVG is drawn).
    public init(png: String? = nil, draw: @escaping Draw) {
        drawn = Mutex(Drawn(svg: nil, png: png))
        self.draw = draw
    }

    public var svg: String { pictures(.svg).svg ?? "" }
    public var png: String { pictures(.png).png ?? "" }

    /// Whether every picture can be had: drawn already, or drawable.
    public var complete: Bool {
        draw != nil || drawn.withLock { !($0.svg ?? "").isEmpty && !($0.png ?? "").isEmpty }
    }

    /// The pictures as they were given, when they are not drawn on demand (for equality).
    var given: (svg: String, png: String)? {
        draw == nil ? drawn.withLock { ($0.svg ?? "", $0.png ?? "") } : nil
    }

    /// Whether the pictures in `formats` are drawn already (a frame with them costs no drawing).
    public func has(_ formats: QRFormats) -> Bool {
        drawn.withLock { d in (!formats.contains(.svg) || d.svg != nil) && (!formats.contains(.png) || d.png != nil) }
    }

    /// Draws the pictures in `formats` not drawn yet, all at once (off the loop, before a frame needs them).
    public func prepare(_ formats: QRFormats) { _ = pictures(formats) }

    private func pictures(_ formats: QRFormats) -> Drawn {
        let have = drawn.withLock { $0 }
        var missing: QRFormats = []
        if formats.contains(.svg), have.svg == nil { missing.insert(.svg) }
        if formats.contains(.png), have.png == nil { missing.insert(.png) }
        guard !missing.isEmpty, let draw else { return have }
        // Drawn outside the lock: two threads wanting the same picture at once may both draw it (the same
        // bytes); the first kept wins. One that cannot be drawn is kept as "" so it is not tried again.
        let made = draw(missing)
        return drawn.withLock { d in
            if missing.contains(.svg), d.svg == nil { d.svg = made.svg ?? "" }
            if missing.contains(.png), d.png == nil { d.png = made.png ?? "" }
            return d
        }
    }
}
