/// Which pictures of a QR code a subscriber wants in its frames (`"formats"` of `subscribe`):
/// `code` (the raw QR text, `qrText`), `svg` (`qrSvg`) and `png` (`qrCode`, a PNG data URL).
/// A subscribe without `formats` gets `standard`, the frame every client got before the option existed.
public struct QRFormats: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let code = QRFormats(rawValue: 1)
    public static let svg = QRFormats(rawValue: 2)
    public static let png = QRFormats(rawValue: 4)
    /// The frame without `formats`: the PNG data URL and the SVG.
    public static let standard: QRFormats = [.svg, .png]

    public static let names: [(String, QRFormats)] = [("code", .code), ("svg", .svg), ("png", .png)]

    /// From the wire: a non-empty array of known names (duplicates allowed, order irrelevant).
    public init(parsing names: [String]) throws(ProtocolError) {
        guard !names.isEmpty else { throw ProtocolError(.invalidMessage, "\"formats\" must not be empty; use any of code, svg, png") }
        var f: QRFormats = []
        for n in names {
            guard let (_, one) = Self.names.first(where: { $0.0 == n }) else {
                throw ProtocolError(.invalidMessage, "unknown format \"\(n.prefix(20))\" in \"formats\"; use any of code, svg, png")
            }
            f.insert(one)
        }
        self = f
    }

    public var wireNames: [String] { Self.names.filter { contains($0.1) }.map(\.0) }
}
