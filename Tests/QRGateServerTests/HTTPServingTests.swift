import Foundation
import Testing
import QRGateHTTP
import QRGateCore
@testable import QRGateServer
import QRGateTestSupport

@Suite(.serialized) struct HTTPServingTests {
    @Test func servesThePageWithContentTypes() throws {
        let s = try TestServer()
        let index = try s.get("/")
        #expect(index.status == 200)
        #expect(index.contentType?.hasPrefix("text/html") == true)
        #expect(index.text.contains("<script src=\"/app.js\""))
        let js = try s.get("/app.js")
        #expect(js.status == 200)
        #expect(js.contentType?.contains("javascript") == true)
        let css = try s.get("/style.css")
        #expect(css.status == 200)
        #expect(css.contentType?.hasPrefix("text/css") == true)
    }

    @Test func healthzAnswersJSON() throws {
        let s = try TestServer()
        let r = try s.get("/healthz")
        #expect(r.status == 200)
        #expect(r.contentType == "application/json")
        #expect(try s.json(r)["status"] as? String == "ok")
    }

    @Test func unknownPathsAre404() throws {
        let s = try TestServer()
        #expect(try s.get("/nope.html").status == 404)
        #expect(try s.get("/api/v1/nothing").status == 404)
        #expect(try s.get("/.git/config").status == 404)
    }

    @Test(arguments: ["/../Package.swift", "/../../etc/passwd", "/%2e%2e/Package.swift", "/%2E%2E/%2E%2E/etc/passwd",
                      "/..%2fPackage.swift", "/%252e%252e/Package.swift", "/static/../../Package.swift", "/....//Package.swift",
                      "/..\\Package.swift", "/%00/../Package.swift"])
    func traversalNeverEscapesStatic(_ path: String) throws {
        let s = try TestServer()
        let r = try s.get(path, pathAsIs: true)
        let index = try s.get("/")
        // lws cuts a decoded %00 short, which leaves "/": the page itself, still inside static/.
        #expect(r.status == 404 || r.status == 400 || (r.status == 200 && r.body == index.body), "status \(r.status) for \(path)")
        #expect(!r.text.contains("PackageDescription"))
        #expect(!r.text.contains("root:"))
    }

    @Test func qrEndpointRendersSVGAndPNG() throws {
        let s = try TestServer()
        let svg = try s.get("/api/v1/qr?text=hello%20qr&format=svg")
        #expect(svg.status == 200)
        #expect(svg.contentType == "image/svg+xml")
        #expect(svg.text.hasPrefix("<svg"))
        let png = try s.get("/api/v1/qr?text=hello%20qr&format=png")
        #expect(png.status == 200)
        #expect(png.contentType == "image/png")
        #expect(try zbarDecode(png.body) == "hello qr")
    }

    @Test func qrEndpointRefusesBadInputWithAReason() throws {
        let s = try TestServer(configJSON: #"{"qr": {"maxTextBytes": 100}}"#)
        let long = try s.get("/api/v1/qr?text=" + String(repeating: "x", count: 101))
        #expect(long.status == 400)
        #expect((try s.json(long)["error"] as? String)?.contains("limit is 100") == true)
        #expect(try s.get("/api/v1/qr").status == 400)
        #expect(try s.get("/api/v1/qr?text=a&format=gif").status == 400)
    }
}

@Suite struct ScopedKeyTests {
    @Test func aTenantKeySeesOnlyItsPrefix() {
        var c = Config()
        c.auth.serviceKeys = [Config.APIKey(key: "shop-key-0123456789", prefix: "shop-"), "all-key-0123456789"]
        c.auth.adminKeys = [Config.APIKey(key: "cafe-admin-0123456789", prefix: "cafe-")]
        let auth = Authenticator(config: c.auth)
        guard case let .success(shop) = auth.authenticate("shop-key-0123456789"),
              case let .success(all) = auth.authenticate("all-key-0123456789"),
              case let .success(cafe) = auth.authenticate("cafe-admin-0123456789") else { Issue.record("keys refused"); return }
        #expect(shop.role == .service && shop.prefix == "shop-" && shop.canSee("shop-1") && !shop.canSee("cafe-1") && !shop.isUnscoped)
        #expect(all.canSee("cafe-1") && all.isUnscoped)
        #expect(cafe.can(.admin, "cafe-9") && !cafe.can(.admin, "shop-1") && !cafe.canSee("shop-1"))
        let token = auth.issueBrowserToken(session: "shop-1").token
        guard case let .success(browser) = auth.authenticate(token) else { Issue.record("token refused"); return }
        #expect(browser.canSee("shop-1") && !browser.canSee("shop-2"))
    }
}

@Suite struct RealtimeWireTests {
    @Test func aUserBroadcastPushDecodesAndIsRelayedAsAUserBroadcast() throws {
        // [3, joinRef, ref, topic, event, meta lengths, encoding 1] + strings + JSON, as realtime-js builds it.
        let topic = Array("realtime:lobby".utf8), event = Array("cursör".utf8), body = Array(#"{"x":1}"#.utf8)
        let push: [UInt8] = [3, 1, 2, UInt8(topic.count), UInt8(event.count), 0, 1] + Array("4".utf8) + Array("12".utf8) + topic + event + body
        guard case let .success(p) = RealtimeWire.decodeUserBroadcastPush(push) else { Issue.record("refused"); return }
        #expect(p == RealtimeWire.Push(joinRef: "4", ref: "12", topic: "realtime:lobby", event: "cursör", payload: .json(.object(["x": .int(1)]))))
        let out = try #require(RealtimeWire.userBroadcast(topic: p.topic, event: p.event, payload: p.payload))
        #expect(Array(out.prefix(5)) == [4, UInt8(topic.count), UInt8(event.count), 0, 1])
        #expect(Array(out.dropFirst(5)) == topic + event + body)
        let binary = RealtimeWire.userBroadcast(topic: "t", event: "e", payload: .binary([0, 255]))
        #expect(binary == [4, 1, 1, 0, 0, UInt8(ascii: "t"), UInt8(ascii: "e"), 0, 255])
    }

    @Test func malformedPushesAreRefusedWithAReason() {
        func reason(_ b: [UInt8]) -> String? {
            if case let .failure(e) = RealtimeWire.decodeUserBroadcastPush(b) { return e.reason }
            return nil
        }
        #expect(reason([3, 0, 0]) == "shorter than its header")
        #expect(reason([4, 0, 0, 1, 1, 0, 1, 0x61, 0x62]) == "kind 4 is not a user broadcast push (3)")
        #expect(reason([3, 0, 0, 9, 1, 0, 1, 0x61]) == "header lengths run past the frame")
        #expect(reason([3, 0, 0, 1, 1, 0, 7, 0x61, 0x62]) == "unknown payload encoding 7")
        #expect(reason([3, 0, 0, 1, 1, 0, 1, 0x61, 0x62] + Array("{nope".utf8)) == "the JSON payload does not parse")
        #expect(reason([3, 0, 0, 1, 1, 0, 1, 0xff, 0x62, 0x7b, 0x7d]) == "a header field is not UTF-8")
        #expect(reason([3, 0, 0, 0, 1, 0, 1, 0x62, 0x7b, 0x7d]) == "empty topic")
    }

    @Test func framesOfBothSerializers() {
        #expect(String(decoding: RealtimeWire.arrayFrame(topic: "realtime:a", event: "broadcast", payload: Array("{}".utf8)), as: UTF8.self)
            == #"[null,null,"realtime:a","broadcast",{}]"#)
        #expect(String(decoding: RealtimeWire.objectFrame(topic: "realtime:a", event: "broadcast", payload: Array("{}".utf8)), as: UTF8.self)
            == #"{"event":"broadcast","payload":{},"ref":null,"topic":"realtime:a"}"#)
    }
}
