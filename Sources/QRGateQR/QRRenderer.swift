import Foundation
import QRGateCore

/// How QR images look: taken from the `qr` section of the configuration.
public struct QRStyle: Sendable, Equatable {
    public var correction: QRErrorCorrection
    /// Light modules around the symbol; scanners want at least 4.
    public var quietZone: Int
    /// Pixels per module in the PNG (and user units in the SVG).
    public var moduleSize: Int

    public init(correction: QRErrorCorrection = .medium, quietZone: Int = 4, moduleSize: Int = 6) {
        self.correction = correction
        self.quietZone = max(0, quietZone)
        self.moduleSize = max(1, moduleSize)
    }
}

/// Renders text as QR images (SVG markup and PNG data URL).
public struct QRRenderer: Sendable {
    public let style: QRStyle

    public init(style: QRStyle) { self.style = style }

    public func render(_ text: String) throws -> SessionQR {
        let matrix = try QRMatrix(encoding: text, correction: style.correction)
        return SessionQR(code: text, pngDataURL: try pngDataURL(matrix), svg: svg(matrix))
    }

    public func svg(_ text: String) throws -> String { svg(try QRMatrix(encoding: text, correction: style.correction)) }
    public func png(_ text: String) throws -> [UInt8] { try png(try QRMatrix(encoding: text, correction: style.correction)) }

    /// A square SVG: one stroked path of horizontal runs, so the markup stays small (it travels in every
    /// QR frame): each row starts with an absolute move ("M x y.5h w") and its further runs move relative
    /// to the end of the previous one ("m gap 0h w"), a third fewer bytes than absolute moves.
    public func svg(_ m: QRMatrix) -> String {
        let q = style.quietZone
        let side = m.width + 2 * q
        let px = side * style.moduleSize
        var d = ""
        d.reserveCapacity(m.width * m.width / 2)
        for y in 0..<m.width {
            var x = 0
            var end: Int? // where the previous run of this row ended
            while x < m.width {
                guard m[x, y] else { x += 1; continue }
                let start = x
                while x < m.width && m[x, y] { x += 1 }
                if let end { d += "m\(start - end) 0h\(x - start)" } else { d += "M\(start + q) \(y + q).5h\(x - start)" }
                end = x
            }
        }
        return ##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 \##(side) \##(side)" width="\##(px)" height="\##(px)" shape-rendering="crispEdges"><rect width="100%" height="100%" fill="#fff"/><path stroke="#000" d="\##(d)"/></svg>"##
    }

    public func png(_ m: QRMatrix) throws -> [UInt8] {
        let q = style.quietZone, s = style.moduleSize
        let side = (m.width + 2 * q) * s
        let rowBytes = (side + 7) / 8
        // One bit a pixel, 1 white: each module row is drawn once, then copied to the module's other pixel rows.
        var rows = [UInt8](repeating: 0xFF, count: rowBytes * side)
        for y in 0..<m.width {
            let first = (y + q) * s * rowBytes
            for x in 0..<m.width where m[x, y] {
                for p in (x + q) * s..<(x + q + 1) * s { rows[first + p >> 3] &= ~(UInt8(0x80) >> UInt8(p & 7)) }
            }
            for dy in 1..<s {
                for i in 0..<rowBytes { rows[first + dy * rowBytes + i] = rows[first + i] }
            }
        }
        return try PNGEncoder.bilevel(width: side, height: side, rows: rows)
    }

    public func pngDataURL(_ m: QRMatrix) throws -> String {
        "data:image/png;base64," + Data(try png(m)).base64EncodedString()
    }
}
