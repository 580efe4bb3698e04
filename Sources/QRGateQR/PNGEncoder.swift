private import CPNG
import Foundation

/// Why libpng refused to write an image.
public struct PNGEncodingError: Error, CustomStringConvertible {
    public let description: String
}

/// Writes black-and-white images as PNG bytes through libpng's simplified API (which reports errors by
/// return value, so no setjmp is needed from Swift).
enum PNGEncoder {
    /// A two-entry gray palette (black, white): libpng's simplified writer stores a colormap of at most two
    /// entries with one bit per pixel and no row filters. The 8-bit grayscale image it replaced was the same
    /// picture, eight times the bytes to deflate and every row filter tried on each: 1.7 ms against 0.35 ms
    /// for a 390-pixel QR on this machine (and 1 137 against 370 bytes), most of an idle fleet's CPU.
    private static let blackAndWhite: [UInt8] = [0, 255]

    /// `pixels` holds one byte per pixel: 0 for black, 1 for white.
    static func bilevel(width: Int, height: Int, pixels: [UInt8]) throws -> [UInt8] {
        precondition(pixels.count == width * height, "pixel buffer does not match the image size")
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        image.width = UInt32(width)
        image.height = UInt32(height)
        image.format = UInt32(PNG_FORMAT_GRAY) | UInt32(PNG_FORMAT_FLAG_COLORMAP)
        image.colormap_entries = UInt32(blackAndWhite.count)
        // One pass into a buffer as large as the packed rows plus slack (zlib's worst case adds a few bytes
        // per 16 KiB block, the chunks a few hundred): compressing twice, once to learn the size, doubled the
        // cost. Should it ever not fit, libpng says how much it needs and the second pass gets exactly that.
        var size = ((width + 7) / 8 + 1) * height + 4096
        var out = [UInt8](repeating: 0, count: size)
        func write() -> Int32 {
            pixels.withUnsafeBytes { px in
                blackAndWhite.withUnsafeBytes { map in
                    out.withUnsafeMutableBytes { dst in
                        png_image_write_to_memory(&image, dst.baseAddress, &size, 0, px.baseAddress, Int32(width), map.baseAddress)
                    }
                }
            }
        }
        var ok = write()
        if ok == 0, size > out.count {
            out = [UInt8](repeating: 0, count: size)
            image.warning_or_error = 0
            ok = write()
        }
        png_image_free(&image)
        guard ok != 0, size > 0 else { throw PNGEncodingError(description: message(of: image)) }
        return Array(out.prefix(size))
    }

    private static func message(of image: png_image) -> String {
        withUnsafeBytes(of: image.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}
