import Foundation
import QRGateCore
import QRGateHTTP

/// Evolution API over libcurl's multi interface: connect, connectionState, logout, create.
public final class EvolutionClient: Sendable {
    public let baseURL: String
    public let credentials: UpstreamCredentials
    let http: CurlMulti
    let timeoutSeconds: Double
    let maxResponseBytes: Int
    /// Told about every upstream request: operation, outcome (`ok` or a failure kind) and seconds taken.
    let observe: (@Sendable (String, String, Double) -> Void)?

    public init(baseURL: String, credentials: UpstreamCredentials, http: CurlMulti, timeoutSeconds: Double, maxResponseBytes: Int,
                observe: (@Sendable (String, String, Double) -> Void)? = nil) {
        self.observe = observe
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.credentials = credentials
        self.http = http
        self.timeoutSeconds = timeoutSeconds
        self.maxResponseBytes = maxResponseBytes
    }

    public func connect(_ instance: String, instanceToken: String? = nil, number: String? = nil) async -> Result<ConnectResult, UpstreamError> {
        // Digits only (validated by PhoneNumber before they get here): nothing to escape.
        let query = number.map { "?number=" + $0 } ?? ""
        return await measured("connect") {
            await call("GET", "/instance/connect/", instance, instanceToken: instanceToken, query: query).flatMap { EvolutionParsing.connect($0.body) }
        }
    }

    public func connectionState(_ instance: String, instanceToken: String? = nil) async -> Result<UpstreamLinkState, UpstreamError> {
        await measured("connectionState") { await call("GET", "/instance/connectionState/", instance, instanceToken: instanceToken).flatMap { EvolutionParsing.connectionState($0.body) } }
    }

    public func logout(_ instance: String, instanceToken: String? = nil) async -> Result<Void, UpstreamError> {
        await measured("logout") { await call("DELETE", "/instance/logout/", instance, instanceToken: instanceToken).map { _ in () } }
    }

    public func createInstance(_ instance: String) async -> Result<CreatedInstance, UpstreamError> {
        let body = JSONValue.object(["instanceName": .string(instance), "qrcode": .bool(false), "integration": .string("WHATSAPP-BAILEYS")]).encoded()
        return await measured("create") { await call("POST", "/instance/create", nil, name: instance, body: Array(body)).flatMap { EvolutionParsing.created($0.body, name: instance) } }
    }

    private func measured<T>(_ op: String, _ work: () async -> Result<T, UpstreamError>) async -> Result<T, UpstreamError> {
        let start = ContinuousClock.now
        let r = await work()
        if let observe {
            let d = ContinuousClock.now - start
            let outcome: String
            switch r {
            case .success: outcome = "ok"
            case let .failure(e): outcome = e.kind
            }
            observe(op, outcome, Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
        }
        return r
    }

    /// What an instance name keeps unescaped in a URL path; built once (a union of character sets per
    /// request was 4 % of the loop with thousands of sessions polling).
    private static let pathSafe = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))

    /// One request with the current key; after a 401, renews the key once and retries.
    private func call(_ method: String, _ path: String, _ instance: String?, name: String? = nil, instanceToken: String? = nil,
                      body: [UInt8]? = nil, query: String = "") async -> Result<ClientResponse, UpstreamError> {
        let label = instance ?? name ?? ""
        var url = baseURL + path
        if let instance {
            url += instance.addingPercentEncoding(withAllowedCharacters: Self.pathSafe) ?? instance
        }
        url += query
        // The global key works for every instance; without one, the instance's own token.
        var key = await credentials.key() ?? instanceToken
        guard key != nil else { return .failure(.noCredentials) }
        for attempt in 0..<2 {
            var headers = [("apikey", key!), ("Accept", "application/json")]
            if body != nil { headers.append(("Content-Type", "application/json")) }
            let request = ClientRequest(method: method, url: url, headers: headers, body: body,
                                        timeoutSeconds: timeoutSeconds, maxResponseBytes: maxResponseBytes)
            switch await http.perform(request) {
            case let .failure(e):
                return .failure(Self.map(e))
            case let .success(r):
                if r.status == 401, attempt == 0, let renewed = await credentials.renewAfterUnauthorized(rejected: key), renewed != key {
                    key = renewed
                    continue
                }
                if let failure = EvolutionParsing.failure(status: r.status, body: r.body, instance: label) { return .failure(failure) }
                return .success(r)
            }
        }
        return .failure(.unauthorized)
    }

    static func map(_ e: HTTPClientError) -> UpstreamError {
        switch e {
        case let .timeout(s): .timeout(seconds: s)
        case .connectionRefused: .connectionRefused
        case let .bodyTooLarge(limit): .bodyTooLarge(limit: limit)
        case .unresolvable: .transport("upstream host name could not be resolved")
        case let .invalidRequest(why): .transport(why)
        case let .transport(why): .transport(why)
        }
    }
}
