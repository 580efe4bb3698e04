import Foundation
import Logging

enum Logging {
    /// Sends swift-log output to standard error at the configured level.
    static func bootstrap(level: String) -> Logger {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = Logger.Level(rawValue: level) ?? .info
            return h
        }
        return Logger(label: "qrgate")
    }
}
