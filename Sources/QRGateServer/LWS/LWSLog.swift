private import CWebSockets
import Logging

/// Routes libwebsockets' own log lines into swift-log.
enum LWSLog {
    nonisolated(unsafe) private static var logger: Logger?
    private static let once: Void = {
        lws_set_log_level(LLL_ERR | LLL_WARN, qgLWSEmit)
    }()

    static func install(_ logger: Logger) {
        var l = logger
        l[metadataKey: "component"] = "lws"
        self.logger = l
        _ = once
    }

    fileprivate static func emit(_ level: Int32, _ line: String) {
        let text = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if level & LLL_ERR != 0 { logger?.error("\(text)") } else { logger?.notice("\(text)") }
    }
}

private func qgLWSEmit(_ level: Int32, _ line: UnsafePointer<CChar>?) {
    guard let line else { return }
    LWSLog.emit(level, String(cString: line))
}
