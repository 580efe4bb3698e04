import Foundation

/// JSON for session events and snapshots (docs/PROTOCOL.md). Built once per event; the bytes are shared.
public enum SessionEventEncoding {
    nonisolated(unsafe) private static let iso: ISO8601DateFormatter = {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }()
    private static let isoLock = NSLock()

    public static func iso8601(_ d: Date) -> String {
        isoLock.lock(); defer { isoLock.unlock() }
        return iso.string(from: d)
    }

    public static func event(_ e: SessionEvent, session: String, seq: Int, now: Date, maxAttempts: Int, numberId: String?) -> [UInt8] {
        var o: [String: JSONValue] = ["action": .string(e.action), "sessionId": .string(session), "seq": .int(seq),
                                      "timestamp": .int(ServerMessage.milliseconds(now))]
        switch e {
        case let .qrGenerated(qr, expiresAt, attempt):
            o["qrCode"] = .string(qr.pngDataURL)
            o["qrSvg"] = .string(qr.svg)
            o["qrExpiresAt"] = .string(iso8601(expiresAt))
            o["attempt"] = .int(attempt)
            o["maxAttempts"] = .int(maxAttempts)
            if let numberId { o["numberId"] = .string(numberId) }
        case let .countdown(remaining, expiresAt):
            o["remaining"] = .int(remaining)
            o["qrExpiresAt"] = .string(iso8601(expiresAt))
        case let .qrExpired(attempt):
            o["attempt"] = .int(attempt)
            o["maxAttempts"] = .int(maxAttempts)
        case let .qrRegenerating(attempt, message):
            o["attempt"] = .int(attempt)
            o["maxAttempts"] = .int(maxAttempts)
            o["message"] = .string(message)
        case let .connected(message, at):
            o["message"] = .string(message)
            o["connectedAt"] = .string(iso8601(at))
        case let .error(message):
            o["error"] = .string(message)
            o["maxAttempts"] = .int(maxAttempts)
        case let .upstreamError(reason):
            o["error"] = .string(reason)
        case .disconnected:
            break
        }
        return ServerMessage.encode(o)
    }

    public static func snapshot(session: String, machine: SessionMachine, seq: Int, now: Date, recovered: Bool?, numberId: String?) -> [UInt8] {
        var o: [String: JSONValue] = ["action": .string("snapshot"), "sessionId": .string(session), "seq": .int(seq),
                                      "timestamp": .int(ServerMessage.milliseconds(now)), "status": .string(machine.status.rawValue),
                                      "attempt": .int(machine.attempt), "maxAttempts": .int(machine.maxAttempts),
                                      "qrCode": machine.qr.map { .string($0.pngDataURL) } ?? .null,
                                      "qrSvg": machine.qr.map { .string($0.svg) } ?? .null,
                                      "qrExpiresAt": machine.qrExpiresAt.map { .string(iso8601($0)) } ?? .null,
                                      "connectedAt": machine.connectedAt.map { .string(iso8601($0)) } ?? .null,
                                      "qrUpdatedAt": machine.qrUpdatedAt.map { .string(iso8601($0)) } ?? .null,
                                      "lastError": machine.lastError.map { .string($0) } ?? .null]
        if let recovered { o["recovered"] = .bool(recovered) }
        if let numberId { o["numberId"] = .string(numberId) }
        return ServerMessage.encode(o)
    }
}
