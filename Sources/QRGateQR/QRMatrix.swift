private import CQREncode
import Foundation

/// Error-correction level of a QR symbol (how much of it may be damaged and still decode).
public enum QRErrorCorrection: String, Sendable, CaseIterable, Codable {
    case low = "L", medium = "M", quartile = "Q", high = "H"

    fileprivate var cLevel: QRecLevel {
        switch self {
        case .low: QR_ECLEVEL_L
        case .medium: QR_ECLEVEL_M
        case .quartile: QR_ECLEVEL_Q
        case .high: QR_ECLEVEL_H
        }
    }
}

/// Why a text could not become a QR symbol.
public enum QREncodingError: Error, Equatable, CustomStringConvertible {
    case empty
    case tooLong(bytes: Int, limit: Int)
    case containsNUL
    case encoderFailed(String)

    public var description: String {
        switch self {
        case .empty: "text is empty"
        case let .tooLong(bytes, limit): "text is \(bytes) bytes; at most \(limit) fit in a QR code"
        case .containsNUL: "text contains a NUL byte"
        case let .encoderFailed(why): "QR encoder failed: \(why)"
        }
    }
}

/// The dark/light modules of one QR symbol, as produced by libqrencode.
public struct QRMatrix: Sendable, Equatable {
    /// Modules per side (without quiet zone).
    public let width: Int
    /// Row-major, `true` = dark module.
    public let modules: [Bool]

    public subscript(x: Int, y: Int) -> Bool { modules[y * width + x] }

    /// Throws what `init(encoding:correction:)` would for text it cannot encode (empty, a NUL, too long),
    /// without encoding it: a code is checked when it arrives and drawn only when someone wants its picture.
    public static func check(_ text: String, correction: QRErrorCorrection) throws(QREncodingError) {
        let n = text.utf8.count
        guard n > 0 else { throw .empty }
        guard !text.utf8.contains(0) else { throw .containsNUL }
        guard n <= capacity(correction) else { throw .tooLong(bytes: n, limit: capacity(correction)) }
    }

    /// Encodes `text` as 8-bit data (any UTF-8 survives) with the given error correction.
    public init(encoding text: String, correction: QRErrorCorrection) throws(QREncodingError) {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { throw .empty }
        guard !bytes.contains(0) else { throw .containsNUL }
        // QR version 40 holds 2953 bytes at level L, fewer at stronger levels; libqrencode reports ERANGE past that.
        errno = 0
        guard let code = QRcode_encodeString8bit(text, 0, correction.cLevel) else {
            if errno == ERANGE { throw .tooLong(bytes: bytes.count, limit: QRMatrix.capacity(correction)) }
            throw .encoderFailed(String(cString: strerror(errno)))
        }
        defer { QRcode_free(code) }
        let w = Int(code.pointee.width)
        let raw = UnsafeBufferPointer(start: code.pointee.data, count: w * w)
        width = w
        modules = raw.map { $0 & 1 == 1 }
    }

    /// Byte capacity of the largest symbol (version 40) at a level.
    public static func capacity(_ level: QRErrorCorrection) -> Int {
        switch level {
        case .low: 2953
        case .medium: 2331
        case .quartile: 1663
        case .high: 1273
        }
    }
}
