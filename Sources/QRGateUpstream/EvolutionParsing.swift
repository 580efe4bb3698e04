import Foundation
import QRGateCore

/// Turns Evolution API bodies into typed results; every shape it documents, nothing else.
public enum EvolutionParsing {
    /// Longest `code` accepted from the upstream (WhatsApp's are ~240 bytes).
    public static let maxCodeBytes = 2048

    public static func connect(_ body: [UInt8]) -> Result<ConnectResult, UpstreamError> {
        guard let json = JSONValue.parse(body), case let .object(o) = json else {
            return .failure(.malformedBody("connect answer is not a JSON object"))
        }
        if let instance = o["instance"] {
            guard let stateText = instance["state"]?.stringValue else { return .failure(.malformedBody("instance without a state")) }
            guard let state = UpstreamLinkState(rawValue: stateText) else { return .failure(.malformedBody("unknown state \"\(stateText.prefix(20))\"")) }
            return .success(.state(state))
        }
        if let codeValue = o["code"] {
            guard case let .string(code) = codeValue, !code.isEmpty else { return .failure(.malformedBody("\"code\" must be a non-empty string")) }
            guard code.utf8.count <= maxCodeBytes else { return .failure(.malformedBody("\"code\" longer than \(maxCodeBytes) bytes")) }
            return .success(.qr(UpstreamQR(code: code, base64: o["base64"]?.stringValue,
                                           pairingCode: o["pairingCode"]?.stringValue, count: o["count"]?.intValue)))
        }
        if o["count"] != nil { return .success(.noQRYet) }
        return .failure(.malformedBody("connect answer has neither code, count nor instance"))
    }

    public static func connectionState(_ body: [UInt8]) -> Result<UpstreamLinkState, UpstreamError> {
        guard let json = JSONValue.parse(body), let s = json["instance"]?["state"]?.stringValue else {
            return .failure(.malformedBody("connectionState answer lacks instance.state"))
        }
        guard let state = UpstreamLinkState(rawValue: s) else { return .failure(.malformedBody("unknown state \"\(s.prefix(20))\"")) }
        return .success(state)
    }

    public static func created(_ body: [UInt8], name: String) -> Result<CreatedInstance, UpstreamError> {
        guard let json = JSONValue.parse(body), json["instance"] != nil else {
            return .failure(.malformedBody("create answer lacks instance"))
        }
        // Evolution v2 sends "hash": "token"; v1 sent "hash": {"apikey": "token"}.
        let token = json["hash"]?.stringValue ?? json["hash"]?["apikey"]?.stringValue
        return .success(CreatedInstance(name: json["instance"]?["instanceName"]?.stringValue ?? name, token: token))
    }

    /// Maps an HTTP status and body to a failure, or nil when the status is a success.
    public static func failure(status: Int, body: [UInt8], instance: String) -> UpstreamError? {
        switch status {
        case 200..<300: return nil
        case 401, 403: return .unauthorized
        case 404: return .instanceNotFound(instance)
        case 400, 409, 422: return .badRequest(message(body) ?? "HTTP \(status)")
        case 500...599: return .server(status: status)
        default: return .unexpectedStatus(status)
        }
    }

    /// Evolution's error message: `response.message` (a string or a list of strings).
    static func message(_ body: [UInt8]) -> String? {
        guard let json = JSONValue.parse(body), let m = json["response"]?["message"] else { return nil }
        switch m {
        case let .string(s): return String(s.prefix(200))
        case let .array(a): return a.compactMap(\.stringValue).joined(separator: "; ").prefix(200).description
        default: return nil
        }
    }

    /// Why a webhook body was refused.
    public struct WebhookError: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    /// A parsed webhook envelope: the event (nil when it is one QRGate does not use) and the envelope's apikey.
    public struct Webhook: Sendable, Equatable {
        public var event: UpstreamEvent?
        public var eventName: String
        public var instance: String
        public var apikey: String?
    }

    /// Parses Evolution's envelope `{"event","instance","data",...,"apikey"}`.
    public static func webhook(_ body: [UInt8]) -> Result<Webhook, WebhookError> {
        guard let json = JSONValue.parse(body) else { return .failure(WebhookError(description: "body is not valid JSON")) }
        guard case let .object(o) = json else { return .failure(WebhookError(description: "body must be a JSON object")) }
        guard let rawEvent = o["event"]?.stringValue, !rawEvent.isEmpty else { return .failure(WebhookError(description: "missing \"event\"")) }
        guard let instance = o["instance"]?.stringValue, ClientMessage.isValidSessionID(instance) else {
            return .failure(WebhookError(description: "missing or invalid \"instance\""))
        }
        guard let data = o["data"], case .object = data else { return .failure(WebhookError(description: "\"data\" must be an object")) }
        // Evolution names events QRCODE_UPDATED in its settings and qrcode.updated in payloads.
        let name = rawEvent.lowercased().replacingOccurrences(of: "_", with: ".")
        var w = Webhook(event: nil, eventName: name, instance: instance, apikey: o["apikey"]?.stringValue)
        switch name {
        case "qrcode.updated":
            if let qr = data["qrcode"] {
                guard let code = qr["code"]?.stringValue, !code.isEmpty, code.utf8.count <= maxCodeBytes else {
                    return .failure(WebhookError(description: "data.qrcode.code must be a non-empty string"))
                }
                w.event = UpstreamEvent(instance: instance, kind: .qr(UpstreamQR(code: code, base64: qr["base64"]?.stringValue,
                                                                               pairingCode: qr["pairingCode"]?.stringValue)))
            } else if let message = data["message"]?.stringValue {
                w.event = UpstreamEvent(instance: instance, kind: .qrLimitReached(String(message.prefix(200))))
            } else {
                return .failure(WebhookError(description: "qrcode.updated needs data.qrcode or data.message"))
            }
        case "connection.update":
            guard let s = data["state"]?.stringValue, let state = UpstreamLinkState(rawValue: s) else {
                return .failure(WebhookError(description: "connection.update needs data.state (open, connecting, close or refused)"))
            }
            w.event = UpstreamEvent(instance: instance, kind: .state(state, statusReason: data["statusReason"]?.intValue))
        default:
            break // other Evolution events are acknowledged and ignored
        }
        return .success(w)
    }
}
