import Foundation

/// Decodes a PNG with zbarimg (Debian's zbar-tools): an independent reader of the QR codes we draw.
/// For tests only.
public func zbarDecode(_ png: [UInt8]) throws -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("qrgate-\(UUID().uuidString).png")
    try Data(png).write(to: url)
    defer { try? FileManager.default.removeItem(at: url) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/zbarimg")
    p.arguments = ["--quiet", "--raw", "-Sbinary", url.path]
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}
