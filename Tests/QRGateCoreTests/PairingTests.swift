import Foundation
import Testing
@testable import QRGateCore

@Suite struct PairingTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    let rules = SessionRules(ttlSeconds: 10, maxAttempts: 2, countdownIntervalSeconds: 1, pollIntervalSeconds: 5, refreshMinIntervalSeconds: 3, backoffMaxSeconds: 20)
    func qr(_ c: String, pairing: String? = nil) -> SessionQR {
        SessionQR(code: c, pngDataURL: "data:image/png;base64,\(c)", svg: "<svg>\(c)</svg>", pairingCode: pairing)
    }
    func at(_ s: Double) -> Date { t0.addingTimeInterval(s) }

    @Test(arguments: [("abcd1234", "ABCD-1234"), ("WZYE-H1YY", "WZYE-H1YY"), (" WZYE H1YY", "WZYE-H1YY")])
    func pairingCodesAreShownAsWhatsAppDoes(_ raw: String, _ shown: String) {
        #expect(PairingCode.normalize(raw) == shown)
    }

    @Test(arguments: ["", "ABC", "ABCD12345", "ABCD-12é4", "<script>", "ABCD_1234"])
    func malformedPairingCodesNeverReachAClient(_ raw: String) {
        #expect(PairingCode.normalize(raw) == nil)
    }

    @Test func phoneNumbersAreDigitsWithTheCountryCode() {
        #expect(PhoneNumber.validate("5511987654321") == "5511987654321")
        #expect(PhoneNumber.validate("+5511987654321") == "5511987654321")
        #expect(PhoneNumber.validate("12345678") == "12345678")
        for bad in ["1234567", "1234567890123456", "+55 11 98765-4321", "55-11", "", "+", "++5511987654321", "5511９87654321", "abcdefghij"] {
            #expect(PhoneNumber.validate(bad) == nil, "\(bad) accepted")
        }
        #expect(PhoneNumber.masked("5511987654321") == "•••• 4321")
    }

    @Test func aPairingCodeGoesOutBesideItsQRAndDiesWithIt() {
        var m = SessionMachine(rules: rules)
        _ = m.handle(.start, now: t0)
        let first = m.handle(.upstreamQR(qr("A", pairing: "ABCD-EFGH")), now: t0)
        #expect(first.events == [.qrGenerated(qr("A", pairing: "ABCD-EFGH"), expiresAt: at(10), attempt: 0),
                                 .pairingCode("ABCD-EFGH", expiresAt: at(10), attempt: 0)])
        // The same QR polled again: nothing; with a new pairing code beside it: only that, same expiry.
        #expect(m.handle(.upstreamQR(qr("A", pairing: "ABCD-EFGH")), now: at(2)).events.isEmpty)
        #expect(m.handle(.upstreamQR(qr("A", pairing: "WXYZ-1234")), now: at(3)).events == [.pairingCode("WXYZ-1234", expiresAt: at(10), attempt: 0)])
        #expect(m.qr?.pairingCode == "WXYZ-1234")
        // The QR expires (the last look finds it unchanged): the code with it; the next round's QR brings the next code.
        #expect(m.handle(.tick, now: at(10)).commands == [.fetchQR])
        let expired = m.handle(.answer(.upstreamQR(qr("A", pairing: "WXYZ-1234")), generation: m.generation), now: at(10.1))
        #expect(expired.events.first == .qrExpired(attempt: 0) && m.qr == nil)
        let next = m.handle(.upstreamQR(qr("B", pairing: "JKLM-5678")), now: at(11))
        #expect(next.events.map(\.action) == ["qr_generated", "pairing_code"])
        #expect(m.persisted.qr?.pairingCode == "JKLM-5678")
    }

    @Test func aPairRequestIsARefreshThatSaysWhy() {
        var m = SessionMachine(rules: rules)
        _ = m.handle(.start, now: t0)
        _ = m.handle(.upstreamQR(qr("A")), now: t0)
        let r = m.refresh(now: at(1), message: SessionMachine.pairingMessage)
        #expect(r.outcome == .accepted && r.commands == [.logoutThenFetch])
        #expect(r.events == [.qrRegenerating(attempt: 0, message: SessionMachine.pairingMessage)])
        #expect(m.refresh(now: at(2), message: SessionMachine.pairingMessage).outcome == .rateLimited(retryAfterSeconds: 2))
    }

    @Test func aBrowsersPairRequestSpendsAnAttemptAndNeverRevivesASession() {
        var m = SessionMachine(rules: rules) // maxAttempts 2, refreshMinIntervalSeconds 3
        #expect(m.refresh(now: t0, asAttempt: true).outcome == .noAttemptsLeft) // idle: nothing to replace
        _ = m.handle(.start, now: t0)
        _ = m.handle(.upstreamQR(qr("A")), now: t0)
        let first = m.refresh(now: at(1), message: SessionMachine.pairingMessage, asAttempt: true)
        #expect(first.outcome == .accepted && m.attempt == 1 && first.events == [.qrRegenerating(attempt: 1, message: SessionMachine.pairingMessage)])
        #expect(m.refresh(now: at(5), asAttempt: true).outcome == .accepted && m.attempt == 2)
        #expect(m.refresh(now: at(9), asAttempt: true).outcome == .noAttemptsLeft)
        // A service's refresh still starts over.
        #expect(m.refresh(now: at(13)).outcome == .accepted && m.attempt == 0)
    }

    @Test func thePairOpValidatesTheNumber() throws {
        #expect(try ClientMessage.parse(Array(#"{"op":"pair","session":"s1","phoneNumber":"+5511987654321"}"#.utf8))
                == .pair(session: "s1", phoneNumber: "5511987654321"))
        for bad in [#"{"op":"pair","session":"s1","phoneNumber":"55-11"}"#, #"{"op":"pair","session":"s1"}"#,
                    #"{"op":"pair","session":"s1","phoneNumber":5511987654321}"#, #"{"op":"pair","session":"*","phoneNumber":"5511987654321"}"#,
                    #"{"op":"pair","session":"s1","phoneNumber":"5511987654321","extra":1}"#] {
            #expect(throws: ProtocolError.self) { try ClientMessage.parse(Array(bad.utf8)) }
        }
    }

    @Test func snapshotsCarryTheCodeAndOnlyTheMaskedNumber() throws {
        var m = SessionMachine(rules: rules)
        _ = m.handle(.start, now: t0)
        _ = m.handle(.upstreamQR(qr("A", pairing: "ABCD-EFGH")), now: t0)
        let bytes = SessionEventEncoding.snapshot(session: "s1", machine: m, seq: 3, now: t0, recovered: nil, numberId: nil, phoneNumber: "5511987654321")
        let o = try #require(JSONValue.parse(bytes))
        #expect(o["pairingCode"] == .string("ABCD-EFGH") && o["pairingPhone"] == .string("•••• 4321"))
        #expect(!String(decoding: bytes, as: UTF8.self).contains("987654321"))
    }
}

@Suite struct EventLogTests {
    func entry(_ seq: Int, _ action: String) -> EventLog.Entry { EventLog.Entry(seq: seq, action: action, bytes: Array(action.utf8)) }

    @Test func aNewQRSupersedesTheOlderOnesAndTheLogStaysContiguous() throws {
        var log = EventLog(capacity: 256)
        for (i, a) in ["qr_generated", "pairing_code", "qr_expired", "qr_regenerating", "qr_generated", "pairing_code", "upstream_error"].enumerated() {
            log.append(entry(i + 1, a))
        }
        // Everything up to the previous QR's pairing code went when the second QR came.
        #expect(log.entries(after: 0).map(\.seq) == [3, 4, 5, 6, 7])
        #expect(try #require(log.after(2, lastSeq: 7)).map(\.seq) == [3, 4, 5, 6, 7])
        #expect(log.after(1, lastSeq: 7) == nil)
        // However many rotations: one QR frame held.
        for seq in 8...500 { log.append(entry(seq, "qr_generated")) }
        #expect(log.entries(after: 0).map(\.seq) == [500])
    }
}
