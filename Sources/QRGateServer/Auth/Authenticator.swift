import Crypto
import Foundation
import ExtrasBase64
import JWTKit
import QRGateCore

/// Who presented what: a role; for browser credentials the sessions they open; for a tenant's key the
/// prefix of the session ids it may see.
public struct Principal: Sendable, Equatable {
    public var role: Role
    /// For browser credentials: the only sessions this principal may see (one for QRGate's own tokens,
    /// those a Supabase user's claim lists for theirs).
    public var sessions: Set<String>
    /// Set for keys scoped to one tenant (`{"key":…,"prefix":…}`): only sessions whose id starts so.
    public var prefix: String?

    public init(role: Role, sessions: Set<String> = [], prefix: String? = nil) {
        self.role = role; self.sessions = sessions; self.prefix = prefix
    }

    /// Whether this principal may see `session`: service and admin keys see all (or their prefix's).
    public func canSee(_ session: String) -> Bool {
        if sessions.contains(session) { return true }
        guard role >= .service else { return false }
        return prefix.map { session.hasPrefix($0) } ?? true
    }

    /// Whether this principal may act on `session` with at least `role`.
    public func can(_ role: Role, _ session: String) -> Bool { self.role >= role && canSee(session) }

    /// True for a key that sees every session (not a tenant's, not a browser token).
    public var isUnscoped: Bool { role >= .service && prefix == nil }
}

/// Why presented credentials were refused: each reason is safe to show, and is what the client shows.
public enum AuthError: Error, Equatable, CustomStringConvertible {
    case unknownKey
    case malformedToken
    case badSignature
    /// The token is past its `exp` by this many seconds.
    case expired(secondsAgo: Int)
    case notYetValid
    case missingClaim(String)
    case wrongAudience(String)
    /// No configured key verifies this token (its `kid`, if any).
    case unknownSigningKey(String?)
    /// The header's `alg` is not the algorithm of the key its `kid` names.
    case algorithmMismatch(header: String, key: String)
    case supabaseNotConfigured
    case badClaim(String)

    public var description: String {
        switch self {
        case .unknownKey: "key not recognised"
        case .malformedToken: "malformed token"
        case .badSignature: "token signature invalid"
        case let .expired(s): "token has expired \(s) second\(s == 1 ? "" : "s") ago"
        case .notYetValid: "token is not valid yet (nbf is in the future)"
        case let .missingClaim(c): "token has no \(c) claim"
        case let .wrongAudience(aud): "token audience \(aud) is not accepted here (auth.supabase.audiences)"
        case let .unknownSigningKey(kid?): "no key with kid \(kid.prefix(64)) (auth.supabase.jwksFile)"
        case .unknownSigningKey(nil): "no key verifies this token's algorithm"
        case let .algorithmMismatch(h, k): "token alg \(h.prefix(16)) does not match its key's \(k)"
        case .supabaseNotConfigured: "this gateway accepts no Supabase tokens (auth.supabase is not configured)"
        case let .badClaim(why): why
        }
    }
}

/// Start-up refusals of the authentication configuration.
public struct AuthConfigError: Error, CustomStringConvertible {
    public let description: String
}

/// API keys (plain or `sha256:`-hashed, compared in constant time) and JWTs, all through vapor/jwt-kit:
/// QRGate's own HS256 browser tokens, and a Supabase project's HS256 / ES256 / RS256 tokens.
///
/// Keys are resolved once at start (jwt-kit's key collection is an actor); verifying then needs only
/// jwt-kit's `JWTAlgorithm` values, its parser and its claim types, all Sendable and synchronous, so a
/// handshake on a loop checks a token without leaving the loop.
public final class Authenticator: Sendable {
    private let serviceKeys: [Config.APIKey]
    private let adminKeys: [Config.APIKey]
    /// Signs QRGate's browser tokens (kid `qrgate`).
    private let signing: JWTKeyCollection
    private let own: any JWTAlgorithm
    private let supabase: SupabaseKeys?
    private let parser = DefaultJWTParser()
    public let browserTokenTTL: TimeInterval
    /// True when the token secret was generated for this process.
    public let ephemeralSecret: Bool

    static let ownKID = "qrgate"
    static let ownIssuer = "qrgate"
    /// Longer than any real token (Supabase's carry user metadata: a few KiB at most).
    static let maxTokenBytes = 16 * 1024
    /// Sessions one token may list.
    static let maxSessionsPerToken = 1000

    /// A Supabase project's verification keys and what its tokens grant.
    struct SupabaseKeys: Sendable {
        var hs256: (any JWTAlgorithm)?
        var byKID: [String: any JWTAlgorithm]
        var sessionsClaim: [String]
        var audiences: Set<String>
    }

    public init(config: Config.Auth, readFile: (String) throws -> Data = { try Data(contentsOf: URL(fileURLWithPath: $0)) }) async throws {
        serviceKeys = config.serviceKeys
        adminKeys = config.adminKeys
        let secret: HMACKey
        if config.tokenSecret.isEmpty {
            secret = HMACKey(key: SymmetricKey(size: .bits256))
            ephemeralSecret = true
        } else {
            secret = HMACKey(from: config.tokenSecret)
            ephemeralSecret = false
        }
        browserTokenTTL = TimeInterval(config.browserTokenTTLSeconds)
        signing = JWTKeyCollection()
        await signing.add(hmac: secret, digestAlgorithm: .sha256, kid: JWKIdentifier(string: Self.ownKID))
        own = try await signing.getKey(for: JWKIdentifier(string: Self.ownKID))
        supabase = config.supabase.enabled ? try await Self.supabaseKeys(config.supabase, readFile: readFile) : nil
    }

    private static func supabaseKeys(_ c: Config.SupabaseAuth, readFile: (String) throws -> Data) async throws -> SupabaseKeys {
        let collection = JWTKeyCollection()
        var keys = SupabaseKeys(byKID: [:], sessionsClaim: c.sessionsClaim.split(separator: ".").map(String.init), audiences: Set(c.audiences))
        if !c.jwtSecret.isEmpty {
            let kid = JWKIdentifier(string: "supabase-hs256")
            await collection.add(hmac: HMACKey(from: c.jwtSecret), digestAlgorithm: .sha256, kid: kid)
            keys.hs256 = try await collection.getKey(for: kid)
        }
        guard !c.jwksFile.isEmpty else { return keys }
        func refuse(_ why: String) -> AuthConfigError { AuthConfigError(description: "auth.supabase.jwksFile \(c.jwksFile): \(why)") }
        let jwks: JWKS
        do {
            jwks = try JSONDecoder().decode(JWKS.self, from: try readFile(c.jwksFile))
        } catch let e as DecodingError {
            throw refuse("not a JWKS document ({\"keys\":[…]}): \(e.localizedDescription)")
        } catch {
            throw refuse("cannot be read: \(error.localizedDescription)")
        }
        for (i, jwk) in jwks.keys.enumerated() {
            guard let kid = jwk.keyIdentifier else { throw refuse("keys[\(i)] has no kid: tokens name their key by kid") }
            guard jwk.privateExponent == nil else { throw refuse("keys[\(i)] (kid \(kid.string)) holds a private key; give only the public keys") }
            // Supabase publishes `alg`; without it the key type tells (EC P-256 → ES256, RSA → RS256).
            let alg: JWK.Algorithm
            if let a = jwk.algorithm { alg = a }
            else if jwk.keyType == .rsa { alg = .rs256 }
            else if jwk.keyType == .ecdsa, jwk.curve == .ecdsa(.p256) { alg = .es256 }
            else { throw refuse("keys[\(i)] (kid \(kid.string)) has no alg and is neither RSA nor EC P-256") }
            guard [JWK.Algorithm.es256, .rs256, .es384, .es512, .rs384, .rs512, .ps256].contains(alg) else {
                throw refuse("keys[\(i)] (kid \(kid.string)): alg \(alg.rawValue) is not supported (ES256, RS256 and their siblings are)")
            }
            do {
                try await collection.add(jwk: jwk)
                keys.byKID[kid.string] = try await collection.getKey(for: kid, alg: alg.rawValue)
            } catch {
                throw refuse("keys[\(i)] (kid \(kid.string)) is not a usable \(alg.rawValue) key: \(error)")
            }
        }
        if keys.byKID.isEmpty && keys.hs256 == nil { throw refuse("holds no key") }
        return keys
    }

    public var hasKeys: Bool { !serviceKeys.isEmpty || !adminKeys.isEmpty }
    /// Whether Supabase tokens are accepted (for the log line at start).
    public var acceptsSupabaseTokens: Bool { supabase != nil }
    public var supabaseKeyIDs: [String] { supabase.map { Array($0.byKID.keys).sorted() } ?? [] }

    /// The principal a presented credential stands for (an API key, or a JWT).
    public func authenticate(_ presented: String, now: Date = Date()) -> Result<Principal, AuthError> {
        if let k = Self.match(presented, adminKeys) { return .success(Principal(role: .admin, prefix: k.prefix)) }
        if let k = Self.match(presented, serviceKeys) { return .success(Principal(role: .service, prefix: k.prefix)) }
        if presented.utf8.lazy.filter({ $0 == UInt8(ascii: ".") }).count == 2 { return verify(presented, now: now) }
        return .failure(.unknownKey)
    }

    /// A short-lived token that opens exactly one session, as a browser.
    public func issueBrowserToken(session: String, now: Date = Date()) async throws -> (token: String, expiresAt: Date) {
        // Whole seconds, as the claim carries them: the answer's expiresAt is the token's.
        let exp = Date(timeIntervalSince1970: now.addingTimeInterval(browserTokenTTL).timeIntervalSince1970.rounded(.down))
        let claims = BrowserClaims(sub: SubjectClaim(value: session), role: "browser", iss: IssuerClaim(value: Self.ownIssuer),
                                   iat: IssuedAtClaim(value: Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))),
                                   exp: ExpirationClaim(value: exp))
        return (try await signing.sign(claims, kid: JWKIdentifier(string: Self.ownKID)), exp)
    }

    private func verify(_ token: String, now: Date) -> Result<Principal, AuthError> {
        let bytes = Array(token.utf8)
        guard bytes.count <= Self.maxTokenBytes, let parts = try? parser.getTokenParts(bytes),
              let headerJSON = try? Base64.decode(bytes: parts.header, options: [.base64UrlAlphabet, .omitPaddingCharacter]),
              let header = try? JSONDecoder().decode(JWTHeader.self, from: Data(headerJSON)),
              let alg = header.alg else { return .failure(.malformedToken) }
        // The header names the key; nothing of the payload is read before its signature holds.
        let kid = header.kid
        // Ours by kid; a kid-less HS256 token is ours too when no Supabase secret claims that shape (tokens
        // issued before the kid was added, during an upgrade).
        let isOwn = kid == Self.ownKID || (kid == nil && alg == "HS256" && supabase?.hs256 == nil)
        let key: any JWTAlgorithm
        if isOwn {
            key = own
        } else if let sb = supabase {
            if let kid, let k = sb.byKID[kid] { key = k }
            else if alg == "HS256", let hs = sb.hs256 { key = hs }
            else { return .failure(.unknownSigningKey(kid)) }
        } else {
            return .failure(.supabaseNotConfigured)
        }
        // The key decides the algorithm; a header asking for another one is refused, never followed.
        guard key.name == alg else { return .failure(.algorithmMismatch(header: alg, key: key.name)) }
        guard let signature = try? Base64.decode(bytes: parts.signature, options: [.base64UrlAlphabet, .omitPaddingCharacter]),
              (try? key.verify(signature, signs: bytes[..<(parts.signature.startIndex - 1)])) == true else {
            // A kid-less HS256 token that is not ours is most likely a Supabase one this gateway was not told about.
            return .failure(isOwn && kid == nil && supabase == nil ? .supabaseNotConfigured : .badSignature)
        }
        guard let claims = try? parser.parse(bytes, as: TokenClaims.self).payload else { return .failure(.malformedToken) }
        guard let exp = claims.exp else { return .failure(.missingClaim("exp")) }
        do { try exp.verifyNotExpired(currentDate: now) } catch {
            return .failure(.expired(secondsAgo: Int(clamping: Int64(max(0, min(now.timeIntervalSince(exp.value), 1e15))))))
        }
        if let nbf = claims.nbf {
            do { try nbf.verifyNotBefore(currentDate: now) } catch { return .failure(.notYetValid) }
        }
        if isOwn {
            guard claims.role == "browser", let sub = claims.sub?.value, ClientMessage.isValidSessionID(sub) else { return .failure(.malformedToken) }
            return .success(Principal(role: .browser, sessions: [sub]))
        }
        guard let sb = supabase else { return .failure(.supabaseNotConfigured) }
        if let aud = claims.aud, !aud.value.contains(where: sb.audiences.contains) {
            return .failure(.wrongAudience(aud.value.map { "\"\($0.prefix(40))\"" }.joined(separator: ", ")))
        }
        guard let role = claims.role else { return .failure(.missingClaim("role")) }
        if role == "service_role" { return .success(Principal(role: .service)) }
        return Self.sessions(in: claims.all, at: sb.sessionsClaim).map { Principal(role: .browser, sessions: $0) }
    }

    /// The sessions a Supabase token's claim lists: absent means none (the anon key); a list of ids, or one id.
    static func sessions(in payload: JSONValue, at path: [String]) -> Result<Set<String>, AuthError> {
        var node: JSONValue? = payload
        for name in path { node = node?[name] }
        let name = path.joined(separator: ".")
        let ids: [String]
        switch node {
        case nil, .null?: return .success([])
        case let .string(s)?: ids = [s]
        case let .array(items)?:
            guard items.count <= maxSessionsPerToken else {
                return .failure(.badClaim("\(name) lists \(items.count) sessions; at most \(maxSessionsPerToken)"))
            }
            var out: [String] = []
            for item in items {
                guard let s = item.stringValue else { return .failure(.badClaim("\(name) must be a list of session ids")) }
                out.append(s)
            }
            ids = out
        default: return .failure(.badClaim("\(name) must be a list of session ids"))
        }
        if let bad = ids.first(where: { !ClientMessage.isValidSessionID($0) }) {
            return .failure(.badClaim("\(name) holds \"\(bad.prefix(40))\", not a session id"))
        }
        return .success(Set(ids))
    }

    /// The entry the presented key is, if any.
    static func match(_ presented: String, _ keys: [Config.APIKey]) -> Config.APIKey? {
        var hit: Config.APIKey?
        let hashed = keys.contains { $0.key.hasPrefix("sha256:") } ? SHA256.hash(data: Data(presented.utf8)).map { String(format: "%02x", $0) }.joined() : ""
        // Every key is compared, so the time taken does not reveal which one matched.
        for entry in keys {
            let k = entry.key
            let equal = k.hasPrefix("sha256:") ? constantTimeEquals(String(k.dropFirst(7)).lowercased(), hashed) : constantTimeEquals(k, presented)
            if equal && hit == nil { hit = entry }
        }
        return hit
    }
}

/// The claims of QRGate's own browser tokens.
struct BrowserClaims: JWTPayload {
    var sub: SubjectClaim
    var role: String
    var iss: IssuerClaim
    var iat: IssuedAtClaim
    var exp: ExpirationClaim

    func verify(using _: some JWTAlgorithm) throws { try exp.verifyNotExpired() }
}

/// What QRGate reads from any JWT: the registered claims through jwt-kit's claim types, `role`, and the
/// whole payload for the configurable sessions claim.
struct TokenClaims: JWTPayload {
    var exp: ExpirationClaim?
    var nbf: NotBeforeClaim?
    var aud: AudienceClaim?
    var iss: IssuerClaim?
    var sub: SubjectClaim?
    var role: String?
    var all: JSONValue

    enum CodingKeys: String, CodingKey { case exp, nbf, aud, iss, sub, role }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        exp = try c.decodeIfPresent(ExpirationClaim.self, forKey: .exp)
        nbf = try c.decodeIfPresent(NotBeforeClaim.self, forKey: .nbf)
        aud = try c.decodeIfPresent(AudienceClaim.self, forKey: .aud)
        iss = try c.decodeIfPresent(IssuerClaim.self, forKey: .iss)
        sub = try c.decodeIfPresent(SubjectClaim.self, forKey: .sub)
        role = try c.decodeIfPresent(String.self, forKey: .role)
        all = try JSONValue(from: decoder)
    }

    func encode(to encoder: any Encoder) throws { try all.encode(to: encoder) }

    /// jwt-kit's hook, for verification through its key collection; QRGate's verifier checks `exp` and `nbf`
    /// itself, on the gateway's clock, and never calls this.
    func verify(using _: some JWTAlgorithm) throws {
        try exp?.verifyNotExpired()
        try nbf?.verifyNotBefore()
    }
}
