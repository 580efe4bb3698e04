import Foundation
import Testing
import QRGateCore

@Suite struct JSONValueTests {
    /// Every kind decodes as itself, at the top and nested, whatever order the decoder tries them in.
    @Test func everyKindDecodesAsItself() throws {
        let text = #"{"s":"1","i":1,"neg":-7,"d":1.5,"e":2e3,"t":true,"f":false,"n":null,"a":[1,"x",[],{}],"o":{"k":[false,0.25]},"empty":""}"#
        let v = try #require(JSONValue.parse(Array(text.utf8)))
        #expect(v == .object([
            "s": .string("1"), "i": .int(1), "neg": .int(-7), "d": .double(1.5), "e": v.objectValue?["e"] ?? .null,
            "t": .bool(true), "f": .bool(false), "n": .null,
            "a": .array([.int(1), .string("x"), .array([]), .object([:])]),
            "o": .object(["k": .array([.bool(false), .double(0.25)])]), "empty": .string(""),
        ]))
        // 2e3 is a number, never a string or a boolean.
        switch v.objectValue?["e"] {
        case .int(2000)?, .double(2000)?: break
        default: Issue.record("2e3 decoded as \(String(describing: v.objectValue?["e"]))")
        }
        for (doc, want) in [("7", JSONValue.int(7)), ("0.5", .double(0.5)), ("true", .bool(true)), ("\"t\"", .string("t")),
                            ("null", .null), ("[]", .array([])), ("{}", .object([:]))] {
            #expect(JSONValue.parse(Array(doc.utf8)) == want)
        }
    }

    /// The direct writer gives exactly the bytes of Foundation's encoder with sorted keys: every ASCII
    /// character (controls, quotes, backslash, slash, DEL), non-ASCII text, keys that differ in case and
    /// length, nesting, numbers at the edges, and the server's own frames.
    @Test func encodedBytesAreFoundationsBytes() throws {
        let ascii = String(decoding: (0..<128).map { UInt8($0) }, as: UTF8.self)
        var values: [JSONValue] = [
            .null, .bool(true), .bool(false), .int(0), .int(-1), .int(Int.max), .int(Int.min), .double(0.1), .double(-2.5e-7), .double(1e21),
            .string(""), .string(ascii), .string("ação · 日本語 · 🙂 · \u{2028}\u{2029} · \u{7F}"), .string("</script>/\\\"\n"),
            .array([]), .object([:]), .array([.null, .array([.object(["a": .array([])])])]),
            .object(["b": .int(1), "B": .int(2), "a": .int(3), "aa": .int(4), "a b": .int(5), "é": .int(6), "Z": .int(7), "_": .int(8), "1": .int(9)]),
            .object([ascii: .string(ascii), "nested": .object(["z": .array([.double(3.0), .string("\u{0}")]), "y": .null])]),
        ]
        values.append(.object(["frames": .array([JSONValue.parse(ServerMessage.hello(connectionID: 42, now: Date(timeIntervalSince1970: 1.5e9),
                                                                                       maxMessageBytes: 65536, role: "browser"))!])]))
        for v in values {
            let ours = v.encodedBytes(), foundations = JSONValue.encodedByFoundation(v)
            // Bytes, not Strings: String equality would forgive a different Unicode normalization.
            #expect(ours == foundations, "\(String(decoding: ours, as: UTF8.self)) ≠ \(String(decoding: foundations, as: UTF8.self))")
            #expect(JSONValue.parse(v.encodedBytes()) == JSONValue.parse(JSONValue.encodedByFoundation(v)))
        }
    }

    @Test func malformedDocumentsAreNil() {
        for doc in ["", "{", "[1,", "{\"a\":}", "tru", "\"open"] {
            #expect(JSONValue.parse(Array(doc.utf8)) == nil)
        }
    }
}
