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

    /// The inverse of `iso8601`.
    public static func date(_ s: String) -> Date? {
        isoLock.lock(); defer { isoLock.unlock() }
        return iso.date(from: s)
    }

    /// Puts the pictures of `qr` a subscriber asked for into `o` (`qrText`, `qrSvg`, `qrCode`); with no QR,
    /// each asked-for field is null.
    static func putQR(_ qr: SessionQR?, formats: QRFormats, into o: inout [String: JSONValue]) {
        if formats.contains(.code) { o["qrText"] = qr.map { .string($0.code) } ?? .null }
        if formats.contains(.svg) { o["qrSvg"] = qr.map { .string($0.svg) } ?? .null }
        if formats.contains(.png) { o["qrCode"] = qr.map { .string($0.pngDataURL) } ?? .null }
    }

    /// Whether the event's frame depends on the subscriber's `formats` (it carries a QR).
    public static func carriesQR(_ e: SessionEvent) -> Bool {
        if case .qrGenerated = e { return true }
        return false
    }

    /// `seq`: nil for a countdown, which is not numbered.
    public static func event(_ e: SessionEvent, session: String, seq: Int?, now: Date, maxAttempts: Int, numberId: String?,
                             formats: QRFormats = .standard) -> [UInt8] {
        var o: [String: JSONValue] = ["action": .string(e.action), "sessionId": .string(session),
                                      "timestamp": .int(ServerMessage.milliseconds(now))]
        if let seq { o["seq"] = .int(seq) }
        switch e {
        case let .qrGenerated(qr, expiresAt, attempt):
            putQR(qr, formats: formats, into: &o)
            o["qrExpiresAt"] = .string(iso8601(expiresAt))
            o["attempt"] = .int(attempt)
            o["maxAttempts"] = .int(maxAttempts)
            if let numberId { o["numberId"] = .string(numberId) }
        case let .pairingCode(code, expiresAt, attempt):
            o["code"] = .string(code)
            o["expiresAt"] = .string(iso8601(expiresAt))
            o["attempt"] = .int(attempt)
            o["maxAttempts"] = .int(maxAttempts)
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

    /// The inverse of `event` for a stored frame (a `qr_generated` kept as its code): the event and when it
    /// happened, or nil when the bytes are not one of ours. `picture` draws a QR for a code (nil: it cannot).
    public static func decode(_ bytes: [UInt8], picture: (_ code: String, _ pairingCode: String?) -> SessionQR?) -> (event: SessionEvent, at: Date)? {
        guard let o = JSONValue.parse(bytes), let action = o["action"]?.stringValue, let ms = o["timestamp"]?.intValue else { return nil }
        let at = Date(timeIntervalSince1970: Double(ms) / 1000)
        func date(_ key: String) -> Date? { o[key]?.stringValue.flatMap(Self.date) }
        let attempt = o["attempt"]?.intValue
        let event: SessionEvent?
        switch action {
        case "qr_generated":
            event = o["qrText"]?.stringValue.flatMap { picture($0, nil) }.flatMap { qr in
                date("qrExpiresAt").flatMap { exp in attempt.map { .qrGenerated(qr, expiresAt: exp, attempt: $0) } }
            }
        case "pairing_code":
            event = o["code"]?.stringValue.flatMap { code in date("expiresAt").flatMap { exp in attempt.map { .pairingCode(code, expiresAt: exp, attempt: $0) } } }
        case "qr_expired": event = attempt.map { .qrExpired(attempt: $0) }
        case "qr_regenerating": event = attempt.map { .qrRegenerating(attempt: $0, message: o["message"]?.stringValue ?? "") }
        case "connected": event = date("connectedAt").map { .connected(message: o["message"]?.stringValue ?? "", at: $0) }
        case "error": event = o["error"]?.stringValue.map { .error($0) }
        case "upstream_error": event = o["error"]?.stringValue.map { .upstreamError($0) }
        case "disconnected": event = .disconnected
        default: event = nil
        }
        return event.map { ($0, at) }
    }

    /// `phoneNumber`: the digits the session links with, if any; only their masked form is sent.
    public static func snapshot(session: String, machine: SessionMachine, seq: Int, now: Date, recovered: Bool?, numberId: String?,
                                phoneNumber: String? = nil, formats: QRFormats = .standard) -> [UInt8] {
        var o: [String: JSONValue] = ["action": .string("snapshot"), "sessionId": .string(session), "seq": .int(seq),
                                      "timestamp": .int(ServerMessage.milliseconds(now)), "status": .string(machine.status.rawValue),
                                      "attempt": .int(machine.attempt), "maxAttempts": .int(machine.maxAttempts),
                                      "qrExpiresAt": machine.qrExpiresAt.map { .string(iso8601($0)) } ?? .null,
                                      "remaining": machine.qrExpiresAt == nil ? .null : .int(machine.remaining(at: now)),
                                      "connectedAt": machine.connectedAt.map { .string(iso8601($0)) } ?? .null,
                                      "qrUpdatedAt": machine.qrUpdatedAt.map { .string(iso8601($0)) } ?? .null,
                                      "lastError": machine.lastError.map { .string($0) } ?? .null]
        putQR(machine.qr, formats: formats, into: &o)
        o["pairingCode"] = machine.qr?.pairingCode.map { .string($0) } ?? .null
        o["pairingPhone"] = phoneNumber.map { .string(PhoneNumber.masked($0)) } ?? .null
        if let recovered { o["recovered"] = .bool(recovered) }
        if let numberId { o["numberId"] = .string(numberId) }
        return ServerMessage.encode(o)
    }
}
