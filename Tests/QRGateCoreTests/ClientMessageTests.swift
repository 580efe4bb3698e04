import Testing
@testable import QRGateCore

@Suite struct ClientMessageTests {
    private func parse(_ s: String) throws(ProtocolError) -> ClientMessage { try ClientMessage.parse(Array(s.utf8)) }
    private func code(_ s: String) -> ErrorCode? {
        do { _ = try parse(s); return nil } catch { return error.code }
    }

    @Test func parsesEveryOp() throws {
        #expect(try parse(#"{"op":"ping"}"#) == .ping)
        #expect(try parse(#"{"op":"subscribe","session":"abc-1","token":"t","since":4}"#) == .subscribe(.one("abc-1"), token: "t", since: .seq(4), formats: nil))
        #expect(try parse(#"{"op":"subscribe","session":"*"}"#) == .subscribe(.all, token: nil, since: nil, formats: nil))
        #expect(try parse(#"{"op":"subscribe","session":"a","formats":["svg"]}"#) == .subscribe(.one("a"), token: nil, since: nil, formats: .svg))
        #expect(try parse(#"{"op":"subscribe","session":"a","formats":["png","code","png"]}"#)
            == .subscribe(.one("a"), token: nil, since: nil, formats: [.png, .code]))
        #expect(try parse(#"{"op":"unsubscribe","session":"abc"}"#) == .unsubscribe(.one("abc")))
        #expect(try parse(#"{"op":"refresh","session":"abc"}"#) == .refresh(session: "abc"))
    }

    @Test func refusesMalformedInputWithACode() {
        #expect(code("not json") == .invalidJSON)
        #expect(code("") == .invalidJSON)
        #expect(code("[1,2]") == .invalidMessage)
        #expect(code(#"{"op":1}"#) == .invalidMessage)
        #expect(code(#"{"nop":"ping"}"#) == .invalidMessage)
        #expect(code(#"{"op":"dance"}"#) == .unknownOp)
        #expect(code(#"{"op":"subscribe"}"#) == .invalidMessage)
        #expect(code(#"{"op":"subscribe","session":"a b"}"#) == .invalidMessage)
        #expect(code(#"{"op":"subscribe","session":"a","since":-1}"#) == .invalidMessage)
        #expect(code(#"{"op":"subscribe","session":"a","since":1e300}"#) == .invalidMessage)
        #expect(code(#"{"op":"subscribe","session":"a","extra":true}"#) == .invalidMessage)
        #expect(code(#"{"op":"refresh","session":"*"}"#) == .invalidMessage)
        #expect(code(#"{"op":"subscribe","session":"a","formats":[]}"#) == .invalidMessage)
        #expect(code(#"{"op":"subscribe","session":"a","formats":"svg"}"#) == .invalidMessage)
        #expect(code(#"{"op":"subscribe","session":"a","formats":["jpeg"]}"#) == .invalidMessage)
        #expect(code(#"{"op":"subscribe","session":"a","formats":[1]}"#) == .invalidMessage)
        #expect(code(#"{"op":"ping","x":[[[[[[[[[[1]]]]]]]]]]}"#) == .invalidMessage)
        #expect(code(String(repeating: "[", count: 5000)) == .invalidJSON)
    }
}
