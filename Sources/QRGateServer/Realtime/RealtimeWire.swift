import QRGateCore

/// The two Phoenix serializers realtime-js speaks, as bytes (written from the protocol: Phoenix's V1/V2
/// JSON forms, and the binary user-broadcast frames of realtime-js's `serializer.ts`).
///
/// - 1.0.0: a message is a JSON object `{"topic","event","payload","ref","join_ref"}`.
/// - 2.0.0: a message is a JSON array `[join_ref, ref, topic, event, payload]`; a client's broadcast
///   arrives as a binary *user broadcast push* (kind 3) and is relayed as a binary *user broadcast*
///   (kind 4), with a JSON or a binary payload.
enum RealtimeWire {
    typealias Refusal = RealtimeEndpoint.Refusal
    static let userBroadcastPush: UInt8 = 3
    static let userBroadcast: UInt8 = 4
    static let binaryEncoding: UInt8 = 0
    static let jsonEncoding: UInt8 = 1

    enum BroadcastPayload: Equatable {
        case json(JSONValue)
        case binary([UInt8])
    }

    struct Push: Equatable {
        var joinRef: String?
        var ref: String?
        var topic: String
        var event: String
        var payload: BroadcastPayload
    }

    /// `{"event":EVENT,"payload":PAYLOAD,"ref":null,"topic":TOPIC}` around a payload already encoded.
    static func objectFrame(topic: String, event: String, payload: [UInt8]) -> [UInt8] {
        var b = Array(#"{"event":"#.utf8)
        b.append(contentsOf: JSONValue.string(event).encoded())
        b.append(contentsOf: Array(#","payload":"#.utf8))
        b.append(contentsOf: payload)
        b.append(contentsOf: Array(#","ref":null,"topic":"#.utf8))
        b.append(contentsOf: JSONValue.string(topic).encoded())
        b.append(UInt8(ascii: "}"))
        return b
    }

    /// `[null,null,TOPIC,EVENT,PAYLOAD]` around a payload already encoded.
    static func arrayFrame(topic: String, event: String, payload: [UInt8]) -> [UInt8] {
        var b = Array("[null,null,".utf8)
        b.append(contentsOf: JSONValue.string(topic).encoded())
        b.append(UInt8(ascii: ","))
        b.append(contentsOf: JSONValue.string(event).encoded())
        b.append(UInt8(ascii: ","))
        b.append(contentsOf: payload)
        b.append(UInt8(ascii: "]"))
        return b
    }

    /// Kind 3: `[3, joinRefLen, refLen, topicLen, eventLen, metaLen, encoding]` + those strings + the payload.
    /// Metadata (allowed keys of the push's payload) is accepted and not relayed.
    static func decodeUserBroadcastPush(_ b: [UInt8]) -> Result<Push, Refusal> {
        guard b.count >= 7 else { return .failure(Refusal(reason: "shorter than its header")) }
        guard b[0] == userBroadcastPush else { return .failure(Refusal(reason: "kind \(b[0]) is not a user broadcast push (3)")) }
        let lengths = (1...5).map { Int(b[$0]) }
        let encoding = b[6]
        guard encoding == binaryEncoding || encoding == jsonEncoding else { return .failure(Refusal(reason: "unknown payload encoding \(encoding)")) }
        var at = 7
        var fields: [String] = []
        for n in lengths {
            guard at + n <= b.count else { return .failure(Refusal(reason: "header lengths run past the frame")) }
            guard let s = String(validating: b[at..<(at + n)], as: UTF8.self) else { return .failure(Refusal(reason: "a header field is not UTF-8")) }
            fields.append(s)
            at += n
        }
        guard !fields[2].isEmpty else { return .failure(Refusal(reason: "empty topic")) }
        guard !fields[3].isEmpty else { return .failure(Refusal(reason: "empty event")) }
        let rest = Array(b[at...])
        let payload: BroadcastPayload
        if encoding == jsonEncoding {
            guard let json = JSONValue.parse(rest), json.depth <= 12 else { return .failure(Refusal(reason: "the JSON payload does not parse")) }
            payload = .json(json)
        } else {
            payload = .binary(rest)
        }
        return .success(Push(joinRef: fields[0].isEmpty ? nil : fields[0], ref: fields[1].isEmpty ? nil : fields[1],
                             topic: fields[2], event: fields[3], payload: payload))
    }

    /// Kind 4: `[4, topicLen, eventLen, metaLen, encoding]` + topic + event + metadata + payload; nil when
    /// the topic or event is over the 255 bytes a length byte can say.
    static func userBroadcast(topic: String, event: String, payload: BroadcastPayload) -> [UInt8]? {
        let t = Array(topic.utf8), e = Array(event.utf8)
        guard t.count <= 255, e.count <= 255 else { return nil }
        var out: [UInt8] = [userBroadcast, UInt8(t.count), UInt8(e.count), 0]
        switch payload {
        case let .json(v):
            out.append(jsonEncoding)
            out += t
            out += e
            out.append(contentsOf: v.encoded())
        case let .binary(bytes):
            out.append(binaryEncoding)
            out += t
            out += e
            out += bytes
        }
        return out
    }
}
