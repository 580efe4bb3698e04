import Foundation

/// Encodes the frames the server sends that are not session events (hello, pong, errors, replies).
public enum ServerMessage {
    public static let protocolVersion = 1

    public static func hello(connectionID: UInt64, now: Date, maxMessageBytes: Int, role: String, bootId: String = "", loop: Int = 0) -> [UInt8] {
        encode(["action": .string("hello"), "server": .string("qrgate"), "protocol": .int(protocolVersion), "bootId": .string(bootId),
                "version": .string(QRGateVersion.string), "connectionId": .int(Int(connectionID)),
                "maxMessageBytes": .int(maxMessageBytes), "role": .string(role), "loop": .int(loop),
                "timestamp": .int(milliseconds(now))])
    }

    public static func pong(now: Date) -> [UInt8] {
        encode(["action": .string("pong"), "timestamp": .int(milliseconds(now))])
    }

    public static func error(_ e: ProtocolError, now: Date, session: String? = nil, extra: [String: JSONValue] = [:]) -> [UInt8] {
        var o: [String: JSONValue] = ["action": .string("error"), "code": .string(e.code.rawValue),
                                      "reason": .string(e.reason), "timestamp": .int(milliseconds(now))]
        if let session { o["sessionId"] = .string(session) }
        for (k, v) in extra { o[k] = v }
        return encode(o)
    }

    public static func encode(_ object: [String: JSONValue]) -> [UInt8] {
        JSONValue.object(object).encodedBytes()
    }

    public static func milliseconds(_ date: Date) -> Int { Int((date.timeIntervalSince1970 * 1000).rounded()) }
}

/// The gateway's version, reported in `hello` and `/healthz`.
public enum QRGateVersion {
    public static let string = "0.1.0"
}
