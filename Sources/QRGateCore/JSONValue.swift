import Foundation

/// A JSON document as a Swift value: used where input must be checked key by key
/// (configuration files, client messages) before it becomes a typed value.
public enum JSONValue: Codable, Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// Each kind is tried in turn and a wrong guess costs a thrown `DecodingError`, so the common kinds go
    /// first: strings (most values), then objects, numbers (an integer before a double), booleans, arrays.
    /// Bool, Int, Double and String first, as before, made a string three throws and an object five: decoding
    /// upstream answers was a fifth of the loop's time with thousands of sessions polling. A JSON value
    /// decodes only as its own kind, so the order changes nothing but the cost.
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let o = try? c.decode([String: JSONValue].self) { self = .object(o) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else { self = .array(try c.decode([JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case let .bool(b): try c.encode(b)
        case let .int(i): try c.encode(i)
        case let .double(d): try c.encode(d)
        case let .string(s): try c.encode(s)
        case let .array(a): try c.encode(a)
        case let .object(o): try c.encode(o)
        }
    }

    /// Parses JSON text; nil when it is not JSON.
    public static func parse(_ bytes: some Collection<UInt8>) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))
    }

    public func encoded() -> Data { Data(encodedBytes()) }

    /// The same bytes as `JSONEncoder` with `[.sortedKeys, .withoutEscapingSlashes]` (a test holds the two
    /// equal over every ASCII character, non-ASCII text, nesting and key order), written directly: every
    /// frame the server sends but the shared event frames is built per connection (hello, subscribed,
    /// snapshot), and the Codable encoder's generic machinery made JSON about half the CPU of setting up a
    /// subscriber (Benchmarks/results/NOTES.md). Doubles, rare here, still go through `JSONEncoder`.
    public func encodedBytes() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(into: &out)
        return out
    }

    private func write(into out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case let .bool(b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case let .int(i): out.append(contentsOf: String(i).utf8)
        case let .double(d): out.append(contentsOf: Self.encodedByFoundation(.double(d)))
        case let .string(s): Self.writeString(s, into: &out)
        case let .array(a):
            out.append(UInt8(ascii: "["))
            for (n, v) in a.enumerated() {
                if n > 0 { out.append(UInt8(ascii: ",")) }
                v.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case let .object(o):
            out.append(UInt8(ascii: "{"))
            // Foundation's `.sortedKeys` order: by the keys' UTF-8 bytes.
            for (n, (key, value)) in o.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }).enumerated() {
                if n > 0 { out.append(UInt8(ascii: ",")) }
                Self.writeString(key, into: &out)
                out.append(UInt8(ascii: ":"))
                value.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    private static let hex = Array("0123456789abcdef".utf8)

    /// A JSON string: `"` and `\` escaped, control characters as `\n`-style or `\u00XX` escapes, the rest
    /// (`/` and non-ASCII included) as UTF-8.
    private static func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        let u = s.utf8
        var start = u.startIndex, i = u.startIndex
        while i != u.endIndex {
            let b = u[i]
            if b < 0x20 || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") {
                out.append(contentsOf: u[start..<i])
                switch b {
                case UInt8(ascii: "\""): out.append(contentsOf: #"\""#.utf8)
                case UInt8(ascii: "\\"): out.append(contentsOf: #"\\"#.utf8)
                case 0x0A: out.append(contentsOf: #"\n"#.utf8)
                case 0x0D: out.append(contentsOf: #"\r"#.utf8)
                case 0x09: out.append(contentsOf: #"\t"#.utf8)
                case 0x08: out.append(contentsOf: #"\b"#.utf8)
                case 0x0C: out.append(contentsOf: #"\f"#.utf8)
                default: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(b >> 4)], hex[Int(b & 0xF)]])
                }
                start = u.index(after: i)
            }
            i = u.index(after: i)
        }
        out.append(contentsOf: u[start...])
        out.append(UInt8(ascii: "\""))
    }

    /// What `JSONEncoder` writes for this value (sorted keys, slashes as they are).
    public static func encodedByFoundation(_ v: JSONValue) -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? e.encode(v)).map(Array.init) ?? Array("null".utf8)
    }

    /// Nesting depth: a scalar is 0, `[]` and `{}` are 1.
    public var depth: Int {
        switch self {
        case let .array(a): 1 + (a.map(\.depth).max() ?? 0)
        case let .object(o): 1 + (o.values.map(\.depth).max() ?? 0)
        default: 0
        }
    }

    /// A word for error messages: "a number", "a string", …
    public var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .int: "an integer"
        case .double: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    public subscript(key: String) -> JSONValue? {
        if case let .object(o) = self { return o[key] }
        return nil
    }

    public var stringValue: String? { if case let .string(s) = self { return s }; return nil }
    public var intValue: Int? { if case let .int(i) = self { return i }; return nil }
    public var objectValue: [String: JSONValue]? { if case let .object(o) = self { return o }; return nil }
    public var boolValue: Bool? { if case let .bool(b) = self { return b }; return nil }
}

extension JSONValue: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
}
