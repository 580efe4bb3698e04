import Foundation
import Testing
@testable import QRGateCore

/// Flow control (the outbox), firehose selectors and their parsing, scoped keys in the config.
@Suite struct FirehoseTests {
    @Test func outboxKeepsOrderCountsBytesAndCoalescesToTheNewest() {
        var o = Outbox<String>()
        o.push("qr1", size: 100, key: "qr:a")
        o.push("cd1", size: 10, key: "cd:a")
        o.push("expired", size: 5)
        o.push("cd2", size: 10, key: "cd:a")           // replaces cd1, goes last
        let replacedQR = o.push("qr2", size: 120, key: "qr:a") // replaces qr1
        #expect(replacedQR)
        o.push("qr-b", size: 50, key: "qr:b")          // another session: kept
        #expect(o.count == 4 && o.bytes == 5 + 10 + 120 + 50)
        var out: [String] = []
        while let (f, _) = o.pop() { out.append(f) }
        #expect(out == ["expired", "cd2", "qr2", "qr-b"])
        #expect(o.isEmpty && o.bytes == 0)
        // A key whose frame left can be used again.
        o.push("cd3", size: 10, key: "cd:a")
        let replaced = o.push("cd4", size: 10, key: "cd:a")
        let last = o.pop(), none = o.pop()
        #expect(replaced && last?.frame == "cd4" && none == nil)
    }

    /// Countdowns sleep while nobody may watch any session: no subscriber, "*" or prefix, and no consumer's watcher.
    @Test func theHubWatchesAnySessionOnlyWhileSomeoneMayBeWatching() {
        let hub = Hub()
        #expect(!hub.watchesAny)
        hub.subscribe(1, to: "a")
        #expect(hub.watchesAny)
        _ = hub.unsubscribe(1, from: "a")
        #expect(!hub.watchesAny)
        hub.subscribe(3, prefix: "shop-")
        #expect(hub.watchesAny)
        hub.remove(3)
        hub.subscribe(4, to: Hub.everySession)
        #expect(hub.watchesAny)
        _ = hub.unsubscribe(4, from: Hub.everySession)
        #expect(!hub.watchesAny)
        final class Watcher: HubConsumer {
            var ids: [String]
            let lists: Bool
            init(_ ids: [String], lists: Bool = true) { self.ids = ids; self.lists = lists }
            func published(_ publication: Publication) {}
            func sessionAdded(_ session: String) {}
            func watches(_ session: String) -> Bool { ids.contains(session) }
            var listsWatchedSessions: Bool { lists }
            func forEachWatchedSession(_ body: (String) -> Void) { ids.forEach(body) }
        }
        let w = Watcher([])
        hub.add(consumer: w)
        #expect(!hub.watchesAny)
        w.ids = ["c"]
        #expect(hub.watchesAny)
        w.ids = []
        hub.add(consumer: Watcher([], lists: false))
        #expect(hub.watchesAny)
    }

    @Test func aMarkedFrameIsNeverCoalescedAway() {
        var o = Outbox<String>()
        o.push("batch", size: 10, key: "k", marker: true)
        let replaced = o.push("newer", size: 10, key: "k")
        let first = o.pop(), second = o.pop()
        #expect(!replaced && first?.frame == "batch" && first?.marker == true && second?.frame == "newer")
    }

    @Test func outboxStaysLinearOverManyCoalescingPushes() {
        var o = Outbox<Int>()
        for round in 0..<50 { for s in 0..<2000 { o.push(round, size: 1, key: "cd:\(s)") } }
        #expect(o.count == 2000 && o.bytes == 2000)
        var n = 0
        while let (f, _) = o.pop() { #expect(f == 49); n += 1 }
        #expect(n == 2000)
        o.push(1, size: 3)
        o.removeAll()
        let none = o.pop()
        #expect(o.isEmpty && o.bytes == 0 && none == nil)
    }

    @Test func aReaderThatTakesNothingKeepsTheOutboxPacked() {
        var o = Outbox<Int>()
        for round in 0..<200 { for s in 0..<100 { o.push(round, size: 10, key: "cd:\(s)") } }
        o.push(-1, size: 5) // a state event: kept
        #expect(o.count == 101 && o.bytes == 1005 && o.capacityInUse <= 2 * 101 + 64)
        var seen: [Int] = []
        while let (f, _) = o.pop() { seen.append(f) }
        #expect(seen.count == 101 && seen.dropLast().allSatisfy { $0 == 199 } && seen.last == -1)
    }

    @Test func hubReachesPrefixSubscribersOnceWithDirectFormatsWinning() {
        let hub = Hub()
        hub.subscribe(1, prefix: "shop-", formats: .code)
        hub.subscribe(2, prefix: "shop-a", formats: .svg)
        hub.subscribe(2, prefix: "shop-", formats: .svg)
        hub.subscribe(3, to: Hub.everySession, formats: .code)
        hub.subscribe(1, to: "shop-a1", formats: .png)
        let a = hub.audience(of: "shop-a1")
        #expect(Set(a[.png] ?? []) == [1] && Set(a[.svg] ?? []) == [2] && Set(a[.code] ?? []) == [3])
        let other = hub.audience(of: "cafe-1")
        #expect(other.count == 1 && other[.code] == [3])
        #expect(hub.reaches(2, session: "shop-zz") && !hub.reaches(2, session: "cafe-1"))
        #expect(hub.unsubscribe(2, prefix: "shop-") && !hub.unsubscribe(2, prefix: "shop-"))
        // Two references (a tenant's "*" and the same prefix asked for explicitly): one left keeps it.
        hub.subscribe(5, prefix: "cafe-"); hub.subscribe(5, prefix: "cafe-")
        #expect(hub.unsubscribe(5, prefix: "cafe-") && hub.reaches(5, session: "cafe-1"))
        #expect(hub.unsubscribe(5, prefix: "cafe-") && !hub.reaches(5, session: "cafe-1"))
        #expect(hub.audience(of: "shop-b")[.svg] == nil)
        hub.remove(1)
        #expect(hub.audience(of: "shop-x")[.code] == [3] && hub.subscriptionCount == 2)
    }

    private func parse(_ s: String) throws(ProtocolError) -> ClientMessage { try ClientMessage.parse(Array(s.utf8)) }
    private func reason(_ s: String) -> String? {
        do { _ = try parse(s); return nil } catch { return error.reason }
    }

    @Test func selectorsAndSinceMapsParse() throws {
        #expect(try parse(#"{"op":"subscribe","sessions":["a","b","a"],"since":{"a":3}}"#)
            == .subscribe(.list(["a", "b"]), token: nil, since: .map(["a": 3]), formats: nil))
        #expect(try parse(#"{"op":"subscribe","prefix":"shop-","formats":["code"]}"#)
            == .subscribe(.prefix("shop-"), token: nil, since: nil, formats: .code))
        #expect(try parse(#"{"op":"subscribe","session":"*","since":{"x":0}}"#) == .subscribe(.all, token: nil, since: .map(["x": 0]), formats: nil))
        #expect(try parse(#"{"op":"unsubscribe","prefix":"p"}"#) == .unsubscribe(.prefix("p")))
        #expect(try parse(#"{"op":"unsubscribe","sessions":["a"]}"#) == .unsubscribe(.list(["a"])))
        #expect(reason(#"{"op":"subscribe","session":"a","prefix":"b"}"#)?.contains("not several") == true)
        #expect(reason(#"{"op":"subscribe","sessions":[]}"#)?.contains("empty") == true)
        #expect(reason(#"{"op":"subscribe","sessions":"a"}"#)?.contains("array") == true)
        #expect(reason(#"{"op":"subscribe","sessions":["a b"]}"#)?.contains("each of") == true)
        #expect(reason(#"{"op":"subscribe","prefix":""}"#)?.contains("prefix") == true)
        #expect(reason(#"{"op":"subscribe","session":"*","since":5}"#)?.contains("object") == true)
        #expect(reason(#"{"op":"subscribe","session":"a","since":{"a":1}}"#)?.contains("integer") == true)
        #expect(reason(#"{"op":"subscribe","session":"*","since":{"a":-1}}"#)?.contains("non-negative") == true)
        #expect(reason(#"{"op":"subscribe","session":"*","since":{"a b":1}}"#)?.contains("key") == true)
    }

    @Test func scopedKeysDecodeBesidePlainOnesAndAreChecked() throws {
        let text = #"{"auth":{"serviceKeys":["plain-key-0123456789",{"key":"shop-key-0123456789","prefix":"shop-"}]}}"#
        let c = try Config.load(fileContents: Data(text.utf8))
        #expect(c.auth.serviceKeys == [Config.APIKey(key: "plain-key-0123456789"), Config.APIKey(key: "shop-key-0123456789", prefix: "shop-")])
        let bad = #"{"auth":{"adminKeys":[{"key":"shop-key-0123456789","prefix":"a b"}]}}"#
        #expect(throws: ConfigError.self) { try Config.load(fileContents: Data(bad.utf8)) }
        let unknown = #"{"auth":{"adminKeys":[{"key":"shop-key-0123456789","tenant":"x"}]}}"#
        #expect(throws: ConfigError.self) { try Config.load(fileContents: Data(unknown.utf8)) }
        let env = try Config.load(fileContents: nil, environment: ["QRGATE_AUTH_SERVICEKEYS": "one-key-0123456789abc,two-key-0123456789abc"])
        #expect(env.auth.serviceKeys.map(\.key) == ["one-key-0123456789abc", "two-key-0123456789abc"])
        let old = #"{"server":{"outboxLimit":64}}"#
        #expect(throws: ConfigError.invalid(key: "server.outboxLimit",
                                            reason: "was replaced by server.outboxBytes (unsent bytes, default 4194304) and server.slowConsumerSeconds (default 10)")) {
            try Config.load(fileContents: Data(old.utf8))
        }
        let small = #"{"server":{"outboxBytes":1000}}"#
        #expect(throws: ConfigError.self) { try Config.load(fileContents: Data(small.utf8)) }
    }
}
