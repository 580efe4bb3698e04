import Foundation
import JWTKit
import Testing
import QRGateHTTP
import QRGateCore
@testable import QRGateServer
import QRGateTestSupport

@Suite(.serialized) struct HTTPServingTests {
    @Test func servesThePageWithContentTypes() async throws {
        let s = try await TestServer()
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

    @Test func healthzAnswersJSON() async throws {
        let s = try await TestServer()
        let r = try s.get("/healthz")
        #expect(r.status == 200)
        #expect(r.contentType == "application/json")
        #expect(try s.json(r)["status"] as? String == "ok")
    }

    /// Without TCP_NODELAY a keep-alive client waits 40 ms (its delayed ACK) for every response whose
    /// body goes out after its headers, and a frame sent behind an unacknowledged one waits as long.
    @Test func acceptedConnectionsSendWithoutNagleDelay() async throws {
        let s = try await TestServer()
        let client = try LoopbackConnection(port: s.port)
        let deadline = ContinuousClock.now + .seconds(5)
        var server = client.serverSide()
        while server == nil, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
            server = client.serverSide()
        }
        let accepted = try #require(server, "the gateway never accepted the connection")
        #expect(tcpNoDelay(accepted))
        #expect(!tcpNoDelay(client.fd)) // the check itself can tell the two apart
    }

    @Test func unknownPathsAre404() async throws {
        let s = try await TestServer()
        #expect(try s.get("/nope.html").status == 404)
        #expect(try s.get("/api/v1/nothing").status == 404)
        #expect(try s.get("/.git/config").status == 404)
    }

    @Test(arguments: ["/../Package.swift", "/../../etc/passwd", "/%2e%2e/Package.swift", "/%2E%2E/%2E%2E/etc/passwd",
                      "/..%2fPackage.swift", "/%252e%252e/Package.swift", "/static/../../Package.swift", "/....//Package.swift",
                      "/..\\Package.swift", "/%00/../Package.swift"])
    func traversalNeverEscapesStatic(_ path: String) async throws {
        let s = try await TestServer()
        let r = try s.get(path, pathAsIs: true)
        let index = try s.get("/")
        // lws cuts a decoded %00 short, which leaves "/": the page itself, still inside static/.
        #expect(r.status == 404 || r.status == 400 || (r.status == 200 && r.body == index.body), "status \(r.status) for \(path)")
        #expect(!r.text.contains("PackageDescription"))
        #expect(!r.text.contains("root:"))
    }

    @Test func qrEndpointRendersSVGAndPNG() async throws {
        let s = try await TestServer()
        let svg = try s.get("/api/v1/qr?text=hello%20qr&format=svg")
        #expect(svg.status == 200)
        #expect(svg.contentType == "image/svg+xml")
        #expect(svg.text.hasPrefix("<svg"))
        let png = try s.get("/api/v1/qr?text=hello%20qr&format=png")
        #expect(png.status == 200)
        #expect(png.contentType == "image/png")
        #expect(try zbarDecode(png.body) == "hello qr")
    }

    @Test func qrEndpointRefusesBadInputWithAReason() async throws {
        let s = try await TestServer(configJSON: #"{"qr": {"maxTextBytes": 100}}"#)
        let long = try s.get("/api/v1/qr?text=" + String(repeating: "x", count: 101))
        #expect(long.status == 400)
        #expect((try s.json(long)["error"] as? String)?.contains("limit is 100") == true)
        #expect(try s.get("/api/v1/qr").status == 400)
        #expect(try s.get("/api/v1/qr?text=a&format=gif").status == 400)
    }
}

@Suite struct ScopedKeyTests {
    @Test func aTenantKeySeesOnlyItsPrefix() async throws {
        var c = Config()
        c.auth.serviceKeys = [Config.APIKey(key: "shop-key-0123456789", prefix: "shop-"), "all-key-0123456789"]
        c.auth.adminKeys = [Config.APIKey(key: "cafe-admin-0123456789", prefix: "cafe-")]
        let auth = try await Authenticator(config: c.auth)
        guard case let .success(shop) = auth.authenticate("shop-key-0123456789"),
              case let .success(all) = auth.authenticate("all-key-0123456789"),
              case let .success(cafe) = auth.authenticate("cafe-admin-0123456789") else { Issue.record("keys refused"); return }
        #expect(shop.role == .service && shop.prefix == "shop-" && shop.canSee("shop-1") && !shop.canSee("cafe-1") && !shop.isUnscoped)
        #expect(all.canSee("cafe-1") && all.isUnscoped)
        #expect(cafe.can(.admin, "cafe-9") && !cafe.can(.admin, "shop-1") && !cafe.canSee("shop-1"))
        let token = try await auth.issueBrowserToken(session: "shop-1").token
        guard case let .success(browser) = auth.authenticate(token) else { Issue.record("token refused"); return }
        #expect(browser.canSee("shop-1") && !browser.canSee("shop-2"))
    }
}

/// Claims as a Supabase project's tokens carry them (written here with jwt-kit, as Supabase Auth would).
private struct SupabaseClaims: JWTPayload {
    var role: String
    var exp: ExpirationClaim
    var aud: AudienceClaim?
    var sub: SubjectClaim?
    var app_metadata: [String: [String]]?
    func verify(using _: some JWTAlgorithm) throws {}
}

@Suite struct TokenTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)
    static let secret = "super-secret-jwt-token-with-at-least-32-characters-long"

    private func claims(_ role: String, sessions: [String]? = nil, aud: String? = "authenticated", exp: TimeInterval = 3600) -> SupabaseClaims {
        SupabaseClaims(role: role, exp: ExpirationClaim(value: Self.now.addingTimeInterval(exp)), aud: aud.map { AudienceClaim(value: [$0]) },
                       sub: SubjectClaim(value: "user-1"), app_metadata: sessions.map { ["qrgate_sessions": $0] })
    }

    private func hs256(_ c: SupabaseClaims, secret: String = TokenTests.secret) async throws -> String {
        try await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256).sign(c)
    }

    @Test func ownBrowserTokensExpireAndAreBoundToTheirSecret() async throws {
        var c = Config()
        c.auth.tokenSecret = String(repeating: "s", count: 32)
        c.auth.browserTokenTTLSeconds = 60
        let auth = try await Authenticator(config: c.auth)
        let (token, exp) = try await auth.issueBrowserToken(session: "shop-1", now: Self.now)
        #expect(exp == Self.now.addingTimeInterval(60))
        #expect(try auth.authenticate(token, now: Self.now).get() == Principal(role: .browser, sessions: ["shop-1"]))
        #expect(auth.authenticate(token, now: Self.now.addingTimeInterval(75)) == .failure(.expired(secondsAgo: 15)))
        var tampered = Array(token.utf8)
        tampered[tampered.count - 3] = tampered[tampered.count - 3] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(auth.authenticate(String(decoding: tampered, as: UTF8.self), now: Self.now) == .failure(.badSignature))
        c.auth.tokenSecret = String(repeating: "t", count: 32)
        let other = try await Authenticator(config: c.auth)
        #expect(other.authenticate(token, now: Self.now) == .failure(.badSignature))
        #expect(auth.authenticate("a.b.c", now: Self.now) == .failure(.malformedToken))
    }

    @Test func supabaseHS256TokensMapRolesAndSessions() async throws {
        var c = Config()
        #expect(try await Authenticator(config: c.auth).authenticate(try await hs256(claims("service_role")), now: Self.now) == .failure(.supabaseNotConfigured))
        c.auth.supabase.jwtSecret = Self.secret
        let auth = try await Authenticator(config: c.auth)
        func check(_ token: String) -> Result<Principal, AuthError> { auth.authenticate(token, now: Self.now) }
        #expect(check(try await hs256(claims("service_role", aud: nil))) == .success(Principal(role: .service)))
        #expect(check(try await hs256(claims("authenticated", sessions: ["shop-1", "shop-2"]))) == .success(Principal(role: .browser, sessions: ["shop-1", "shop-2"])))
        #expect(check(try await hs256(claims("anon", aud: nil))) == .success(Principal(role: .browser)))
        #expect(check(try await hs256(claims("authenticated", sessions: ["a"], aud: "elsewhere"))) == .failure(.wrongAudience(#""elsewhere""#)))
        #expect(check(try await hs256(claims("authenticated", sessions: ["a"], exp: -30))) == .failure(.expired(secondsAgo: 30)))
        #expect(check(try await hs256(claims("service_role"), secret: String(repeating: "x", count: 40))) == .failure(.badSignature))
        guard case .failure(.badClaim) = check(try await hs256(claims("authenticated", sessions: ["no spaces allowed"]))) else {
            Issue.record("a claim holding a non-id was accepted"); return
        }
    }

    @Test func supabaseAsymmetricKeysComeFromAJWKSFile() async throws {
        let key = ES256PrivateKey(), stranger = ES256PrivateKey()
        let p = try #require(key.publicKey.parameters)
        let jwks = #"{"keys":[{"kty":"EC","crv":"P-256","x":"\#(p.x)","y":"\#(p.y)","kid":"k1","alg":"ES256","use":"sig","key_ops":["verify"],"ext":true}]}"#
        var c = Config()
        c.auth.supabase.jwksFile = "/jwks.json"
        let auth = try await Authenticator(config: c.auth, readFile: { _ in Data(jwks.utf8) })
        #expect(auth.supabaseKeyIDs == ["k1"])
        func es256(_ signer: ES256PrivateKey, kid: String) async throws -> String {
            try await JWTKeyCollection().add(ecdsa: signer, kid: JWKIdentifier(string: kid)).sign(claims("authenticated", sessions: ["shop-9"]), kid: JWKIdentifier(string: kid))
        }
        #expect(auth.authenticate(try await es256(key, kid: "k1"), now: Self.now) == .success(Principal(role: .browser, sessions: ["shop-9"])))
        #expect(auth.authenticate(try await es256(stranger, kid: "k1"), now: Self.now) == .failure(.badSignature))
        #expect(auth.authenticate(try await es256(stranger, kid: "k2"), now: Self.now) == .failure(.unknownSigningKey("k2")))
        // An HS256 token naming the ES256 key's kid is refused, never checked with the public key as a secret.
        let confused = try await JWTKeyCollection().add(hmac: HMACKey(from: Self.secret), digestAlgorithm: .sha256, kid: JWKIdentifier(string: "k1"))
            .sign(claims("service_role"), kid: JWKIdentifier(string: "k1"))
        #expect(auth.authenticate(confused, now: Self.now) == .failure(.algorithmMismatch(header: "HS256", key: "ES256")))

        let privateJWKS = #"{"keys":[{"kty":"EC","crv":"P-256","x":"\#(p.x)","y":"\#(p.y)","d":"AAAA","kid":"k1"}]}"#
        await #expect(throws: AuthConfigError.self) { try await Authenticator(config: c.auth, readFile: { _ in Data(privateJWKS.utf8) }) }
        await #expect(throws: AuthConfigError.self) { try await Authenticator(config: c.auth, readFile: { _ in Data(#"{"keys":[{"kty":"EC"}]}"#.utf8) }) }
        await #expect(throws: AuthConfigError.self) { try await Authenticator(config: c.auth, readFile: { _ in Data("not json".utf8) }) }
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
