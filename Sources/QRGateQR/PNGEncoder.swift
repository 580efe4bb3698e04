private import CPNG
import Foundation

/// Why libpng refused to write an image.
public struct PNGEncodingError: Error, CustomStringConvertible {
    public let description: String
}

/// Writes 8-bit grayscale images as PNG bytes through libpng's simplified API
/// (which reports errors by return value, so no setjmp is needed from Swift).
enum PNGEncoder {
    static func grayscale(width: Int, height: Int, pixels: [UInt8]) throws -> [UInt8] {
        precondition(pixels.count == width * height, "pixel buffer does not match the image size")
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        image.width = UInt32(width)
        image.height = UInt32(height)
        image.format = UInt32(PNG_FORMAT_GRAY)
        // One pass into a buffer as large as the raw rows (zlib's worst case adds a few bytes per 16 KiB
        // block, the chunks a few hundred): compressing twice, once to learn the size, doubled the cost.
        // Should it ever not fit, libpng says how much it needs and the second pass gets exactly that.
        var size = (width + 1) * height + (width + 1) * height / 1000 + 4096
        var out = [UInt8](repeating: 0, count: size)
        var ok = pixels.withUnsafeBytes { px in
            out.withUnsafeMutableBytes { dst in
                png_image_write_to_memory(&image, dst.baseAddress, &size, 0, px.baseAddress, Int32(width), nil)
            }
        }
        if ok == 0, size > out.count {
            out = [UInt8](repeating: 0, count: size)
            image.warning_or_error = 0
            ok = pixels.withUnsafeBytes { px in
                out.withUnsafeMutableBytes { dst in
                    png_image_write_to_memory(&image, dst.baseAddress, &size, 0, px.baseAddress, Int32(width), nil)
                }
            }
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
