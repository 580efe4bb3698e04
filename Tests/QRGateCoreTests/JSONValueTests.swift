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

    @Test func malformedDocumentsAreNil() {
        for doc in ["", "{", "[1,", "{\"a\":}", "tru", "\"open"] {
            #expect(JSONValue.parse(Array(doc.utf8)) == nil)
        }
    }
}
