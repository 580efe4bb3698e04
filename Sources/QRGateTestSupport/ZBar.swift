import Foundation

/// Decodes a PNG with zbarimg (Debian's zbar-tools): an independent reader of the QR codes we draw.
/// For tests only.
public func zbarDecode(_ png: [UInt8]) throws -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("qrgate-\(UUID().uuidString).png")
    try Data(png).write(to: url)
    defer { try? FileManager.default.removeItem(at: url) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/zbarimg")
    // QR codes only: with every symbology on, zbar finds a false linear barcode inside about 1 QR in 4 000 (measured:
    // "D48Crc=0" printed after the code) and the test fails for a picture that is fine.
    p.arguments = ["--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", "-Sbinary", url.path]
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}
