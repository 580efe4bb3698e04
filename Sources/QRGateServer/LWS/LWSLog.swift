private import CWebSockets
import Foundation
import Logging
import Synchronization

/// Routes libwebsockets' own log lines into swift-log. lws has one process-wide log hook, so there is
/// one sink: the first server to start installs its logger, later ones leave it as it is.
enum LWSLog {
    private static let sink = Mutex<Logger?>(nil)

    static func install(_ logger: Logger) {
        let first = sink.withLock { current -> Bool in
            guard current == nil else { return false }
            var l = logger
            l[metadataKey: "component"] = "lws"
            current = l
            return true
        }
        if first { lws_set_log_level(LLL_ERR | LLL_WARN, qgLWSEmit) }
    }

    fileprivate static func emit(_ level: Int32, _ line: String) {
        guard let logger = sink.withLock({ $0 }) else { return }
        let text = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if level & LLL_ERR != 0 { logger.error("\(text)") } else { logger.notice("\(text)") }
    }
}

private func qgLWSEmit(_ level: Int32, _ line: UnsafePointer<CChar>?) {
    guard let line else { return }
    LWSLog.emit(level, String(cString: line))
}
