import Foundation
import QRGateCore
import QRGateHTTP

/// Where the upstream key stands; reported without ever exposing the key.
public struct CredentialStatus: Sendable, Equatable {
    public enum State: String, Sendable { case valid, expiring, renewing, fallback, missing }
    public var state: State
    /// `token` (from upstream.tokenURL), `static` (upstream.apiKey) or `none`.
    public var source: String
    public var expiresAt: Date?
    public var lastError: String?
}

/// The key sent to the upstream: a static key, or a token from `upstream.tokenURL` cached until
/// 5 minutes before it expires, renewed before use, renewed once after a 401, and falling back to
/// the static key while renewal fails.
public actor UpstreamCredentials {
    public static let renewMargin: TimeInterval = 300

    private let staticKey: String
    private let tokenURL: String
    private let clientId: String
    private var clientSecret: String
    private let timeoutSeconds: Double
    private let http: CurlMulti
    private let now: @Sendable () -> Date

    private var token: String?
    private var expiresAt: Date?
    private var renewal: Task<String?, Never>?
    private var lastError: String?
    private var failedRenewal = false
    private var installed = false

    public init(staticKey: String, tokenURL: String = "", clientId: String = "", clientSecret: String = "",
                timeoutSeconds: Double = 8, http: CurlMulti, now: @escaping @Sendable () -> Date = { Date() }) {
        self.staticKey = staticKey; self.tokenURL = tokenURL; self.clientId = clientId; self.clientSecret = clientSecret
        self.timeoutSeconds = timeoutSeconds; self.http = http; self.now = now
    }

    /// The key to use now; renews first when the token is missing or within 5 minutes of expiry.
    public func key() async -> String? {
        guard !tokenURL.isEmpty else {
            if installed, let token, let expiresAt, now() < expiresAt { return token }
            return staticKey.isEmpty ? nil : staticKey
        }
        if let token, let expiresAt, now() < expiresAt.addingTimeInterval(-Self.renewMargin) { return token }
        return await renew()
    }

    /// After a 401: renew once (shared by every caller that saw it) and hand back the new key.
    public func renewAfterUnauthorized(rejected: String?) async -> String? {
        guard !tokenURL.isEmpty else { return nil }
        if let token, token != rejected, let expiresAt, now() < expiresAt { return token } // someone renewed already
        token = nil
        return await renew()
    }

    /// Installs a token handed over by an operator (POST /api/v1/upstream/token); an app secret given
    /// with it becomes the client secret of later renewals.
    @discardableResult
    public func install(token newToken: String, expiresIn: TimeInterval?, clientSecret secret: String? = nil) -> CredentialStatus {
        token = newToken
        expiresAt = expiresIn.map { now().addingTimeInterval($0) } ?? now().addingTimeInterval(365 * 86400)
        installed = true
        failedRenewal = false
        lastError = nil
        if let secret { clientSecret = secret }
        return status()
    }

    /// Renews now (POST /api/v1/upstream/refresh-token) and reports the outcome.
    public func renewNow() async -> CredentialStatus {
        _ = await renew()
        return status()
    }

    public func status() -> CredentialStatus {
        if tokenURL.isEmpty {
            if installed, let expiresAt, token != nil, now() < expiresAt {
                return CredentialStatus(state: now() < expiresAt.addingTimeInterval(-Self.renewMargin) ? .valid : .expiring, source: "token", expiresAt: expiresAt)
            }
            return CredentialStatus(state: staticKey.isEmpty ? .missing : .valid, source: staticKey.isEmpty ? "none" : "static", expiresAt: nil)
        }
        if renewal != nil { return CredentialStatus(state: .renewing, source: "token", expiresAt: expiresAt, lastError: lastError) }
        if let expiresAt, token != nil, now() < expiresAt {
            let state: CredentialStatus.State = now() < expiresAt.addingTimeInterval(-Self.renewMargin) ? .valid : .expiring
            return CredentialStatus(state: state, source: "token", expiresAt: expiresAt, lastError: lastError)
        }
        if failedRenewal && !staticKey.isEmpty { return CredentialStatus(state: .fallback, source: "static", expiresAt: nil, lastError: lastError) }
        if !staticKey.isEmpty && !failedRenewal { return CredentialStatus(state: .expiring, source: "token", expiresAt: expiresAt, lastError: lastError) }
        return CredentialStatus(state: .missing, source: "none", expiresAt: nil, lastError: lastError)
    }

    /// One renewal at a time; concurrent callers share it.
    private func renew() async -> String? {
        if let renewal { return await renewal.value }
        let task = Task { await self.fetchToken() }
        renewal = task
        let result = await task.value
        renewal = nil
        return result
    }

    private func fetchToken() async -> String? {
        func enc(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "" }
        let form = "grant_type=client_credentials&client_id=\(enc(clientId))&client_secret=\(enc(clientSecret))"
        let request = ClientRequest(method: "POST", url: tokenURL, headers: [("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json")],
                                    body: Array(form.utf8), timeoutSeconds: timeoutSeconds, maxResponseBytes: 64 * 1024)
        switch await http.perform(request) {
        case let .success(r) where r.status == 200:
            guard let json = JSONValue.parse(r.body), let access = json["access_token"]?.stringValue, !access.isEmpty else {
                return fail("token endpoint answered without access_token")
            }
            let ttl: TimeInterval
            switch json["expires_in"] {
            case let .int(i)?: ttl = TimeInterval(i)
            case let .double(d)?: ttl = d
            default: ttl = 3600
            }
            token = access
            expiresAt = now().addingTimeInterval(ttl)
            failedRenewal = false
            lastError = nil
            return access
        case let .success(r):
            return fail("token endpoint answered HTTP \(r.status)")
        case let .failure(e):
            return fail("token endpoint: \(e)")
        }
    }

    private func fail(_ why: String) -> String? {
        failedRenewal = true
        lastError = why
        token = nil
        expiresAt = nil
        return staticKey.isEmpty ? nil : staticKey
    }
}
