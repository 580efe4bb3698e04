import Foundation
import QRGateCore

/// A QR code as the upstream gave it.
public struct UpstreamQR: Sendable, Equatable {
    /// The raw code WhatsApp encodes ("2@…").
    public var code: String
    /// `data:image/png;base64,…` when the upstream rendered one.
    public var base64: String?
    public var pairingCode: String?
    /// How many codes this connection attempt has shown so far.
    public var count: Int?

    public init(code: String, base64: String? = nil, pairingCode: String? = nil, count: Int? = nil) {
        self.code = code; self.base64 = base64; self.pairingCode = pairingCode; self.count = count
    }
}

/// What `GET /instance/connect/{instance}` answered.
public enum ConnectResult: Sendable, Equatable {
    case qr(UpstreamQR)
    /// `{"count": 0}`: no QR yet; not an error, ask again later.
    case noQRYet
    /// The instance is already linked (or in another non-QR state).
    case state(UpstreamLinkState)
}

/// An instance the upstream created for us.
public struct CreatedInstance: Sendable, Equatable {
    public var name: String
    /// The instance's own API key, when the upstream issued one. Never logged.
    public var token: String?
}

/// Why an upstream call failed, with a reason that is safe to show to users (no keys, no URLs with secrets).
public enum UpstreamError: Error, Sendable, Equatable, CustomStringConvertible {
    case unauthorized
    case instanceNotFound(String)
    case badRequest(String)
    case server(status: Int)
    case unexpectedStatus(Int)
    case timeout(seconds: Double)
    case connectionRefused
    case malformedBody(String)
    case bodyTooLarge(limit: Int)
    case transport(String)
    case noCredentials

    public var description: String {
        switch self {
        case .unauthorized: "upstream refused the API key (401)"
        case let .instanceNotFound(name): "The \"\(name)\" instance does not exist"
        case let .badRequest(why): "upstream refused the request: \(why)"
        case let .server(status): "upstream failed with HTTP \(status)"
        case let .unexpectedStatus(status): "upstream answered an unexpected HTTP \(status)"
        case let .timeout(s): "upstream did not answer within \(s) s"
        case .connectionRefused: "upstream refused the connection"
        case let .malformedBody(why): "upstream sent a malformed body: \(why)"
        case let .bodyTooLarge(limit): "upstream body over \(limit) bytes"
        case let .transport(why): "upstream transport error: \(why)"
        case .noCredentials: "no upstream credentials configured"
        }
    }

    /// A label for metrics.
    public var kind: String {
        switch self {
        case .unauthorized: "unauthorized"
        case .instanceNotFound: "not_found"
        case .badRequest: "bad_request"
        case .server: "server_error"
        case .unexpectedStatus: "unexpected_status"
        case .timeout: "timeout"
        case .connectionRefused: "refused"
        case .malformedBody: "malformed"
        case .bodyTooLarge: "too_large"
        case .transport: "transport"
        case .noCredentials: "no_credentials"
        }
    }
}

/// Something the upstream pushed (webhook) or we learnt by polling, in one shape.
public struct UpstreamEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case qr(UpstreamQR)
        /// WhatsApp stopped issuing codes for this attempt ("QR code limit reached").
        case qrLimitReached(String)
        case state(UpstreamLinkState, statusReason: Int?)
    }
    public var instance: String
    public var kind: Kind

    public init(instance: String, kind: Kind) { self.instance = instance; self.kind = kind }
}
