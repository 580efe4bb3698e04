import Crypto
import Foundation
import QRGateCore

/// Who presented what: a role; for browser tokens the one session it opens; for a tenant's key the
/// prefix of the session ids it may see.
public struct Principal: Sendable, Equatable {
    public var role: Role
    /// Set for browser tokens: the only session this principal may see.
    public var session: String?
    /// Set for keys scoped to one tenant (`{"key":…,"prefix":…}`): only sessions whose id starts so.
    public var prefix: String?

    public init(role: Role, session: String? = nil, prefix: String? = nil) {
        self.role = role; self.session = session; self.prefix = prefix
    }

    /// Whether this principal may see `session`: service and admin keys see all (or their prefix's).
    public func canSee(_ session: String) -> Bool {
        if self.session == session { return true }
        guard role >= .service else { return false }
        return prefix.map { session.hasPrefix($0) } ?? true
    }

    /// Whether this principal may act on `session` with at least `role`.
    public func can(_ role: Role, _ session: String) -> Bool { self.role >= role && canSee(session) }

    /// True for a key that sees every session (not a tenant's, not a browser token).
    public var isUnscoped: Bool { role >= .service && prefix == nil }
}

/// Why presented credentials were refused (reasons safe to show).
public enum AuthError: Error, Equatable, CustomStringConvertible {
    case unknownKey, malformedToken, badSignature, expired
    public var description: String {
        switch self {
        case .unknownKey: "key not recognised"
        case .malformedToken: "malformed token"
        case .badSignature: "token signature invalid"
        case .expired: "token expired"
        }
    }
}

/// API keys (plain or `sha256:`-hashed, compared in constant time) and HS256 browser tokens
/// signed with swift-crypto's HMAC.
/// Immutable after init; SymmetricKey is a value swift-crypto does not mark Sendable.
public final class Authenticator: @unchecked Sendable {
    private let serviceKeys: [Config.APIKey]
    private let adminKeys: [Config.APIKey]
    private let secret: SymmetricKey
    public let browserTokenTTL: TimeInterval
    /// True when the token secret was generated for this process.
    public let ephemeralSecret: Bool

    public init(config: Config.Auth) {
        serviceKeys = config.serviceKeys
        adminKeys = config.adminKeys
        if config.tokenSecret.isEmpty {
            secret = SymmetricKey(size: .bits256)
            ephemeralSecret = true
        } else {
            secret = SymmetricKey(data: Data(config.tokenSecret.utf8))
            ephemeralSecret = false
        }
        browserTokenTTL = TimeInterval(config.browserTokenTTLSeconds)
    }

    public var hasKeys: Bool { !serviceKeys.isEmpty || !adminKeys.isEmpty }

    /// The principal a presented credential stands for (an API key, or a browser token).
    public func authenticate(_ presented: String, now: Date = Date()) -> Result<Principal, AuthError> {
        if let k = Self.match(presented, adminKeys) { return .success(Principal(role: .admin, prefix: k.prefix)) }
        if let k = Self.match(presented, serviceKeys) { return .success(Principal(role: .service, prefix: k.prefix)) }
        if presented.split(separator: ".").count == 3 { return verify(presented, now: now) }
        return .failure(.unknownKey)
    }

    /// A short-lived token that opens exactly one session, as a browser.
    public func issueBrowserToken(session: String, now: Date = Date()) -> (token: String, expiresAt: Date) {
        let exp = now.addingTimeInterval(browserTokenTTL)
        let header = Self.b64url(Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let claims = JSONValue.object(["sub": .string(session), "role": .string("browser"), "iss": .string("qrgate"),
                                       "iat": .int(Int(now.timeIntervalSince1970)), "exp": .int(Int(exp.timeIntervalSince1970))])
        let body = Self.b64url(claims.encoded())
        let signature = HMAC<SHA256>.authenticationCode(for: Data("\(header).\(body)".utf8), using: secret)
        return ("\(header).\(body).\(Self.b64url(Data(signature)))", exp)
    }

    private func verify(_ token: String, now: Date) -> Result<Principal, AuthError> {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, let headerData = Self.unb64url(parts[0]), let bodyData = Self.unb64url(parts[1]),
              let signature = Self.unb64url(parts[2]) else { return .failure(.malformedToken) }
        guard let header = JSONValue.parse(Array(headerData)), header["alg"]?.stringValue == "HS256" else { return .failure(.malformedToken) }
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: Data("\(parts[0]).\(parts[1])".utf8), using: secret) else {
            return .failure(.badSignature)
        }
        guard let claims = JSONValue.parse(Array(bodyData)), let sub = claims["sub"]?.stringValue, let exp = claims["exp"]?.intValue,
              claims["role"]?.stringValue == "browser" else { return .failure(.malformedToken) }
        guard TimeInterval(exp) > now.timeIntervalSince1970 else { return .failure(.expired) }
        return .success(Principal(role: .browser, session: sub))
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

    static func b64url(_ d: Data) -> String {
        d.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func unb64url(_ s: String) -> Data? {
        guard s.utf8.count <= 4096 else { return nil }
        var t = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while t.utf8.count % 4 != 0 { t += "=" }
        return Data(base64Encoded: t)
    }
}
