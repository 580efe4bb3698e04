import Foundation
import QRGateCore
import QRGateUpstream

extension Gateway {
    /// POST /webhooks/evolution: Evolution's envelope, authenticated by the shared secret
    /// (`x-webhook-secret` header or `?secret=`) or by the envelope's apikey.
    func webhook(_ request: HTTPRequest) -> HTTPResponse {
        let parsed: EvolutionParsing.Webhook
        switch EvolutionParsing.webhook(request.body) {
        case let .failure(e): return .error(400, e.description)
        case let .success(w): parsed = w
        }
        guard webhookAuthorized(request, parsed) else {
            return .error(401, "webhook not authenticated: send the shared secret (x-webhook-secret) or a valid apikey")
        }
        guard let event = parsed.event else {
            return .json(200, value: .object(["success": .bool(true), "ignored": .bool(true), "event": .string(parsed.eventName)]))
        }
        logger.debug("webhook \(parsed.eventName) for \(parsed.instance)")
        deliver(event)
        return .json(200, value: .object(["success": .bool(true), "event": .string(parsed.eventName)]))
    }

    private func webhookAuthorized(_ request: HTTPRequest, _ w: EvolutionParsing.Webhook) -> Bool {
        let secret = config.upstream.webhookSecret
        if !secret.isEmpty, let given = request.headers["x-webhook-secret"] ?? request.query["secret"], constantTimeEquals(given, secret) {
            return true
        }
        guard let key = w.apikey, !key.isEmpty else { return false }
        if !config.upstream.apiKey.isEmpty && constantTimeEquals(key, config.upstream.apiKey) { return true }
        if let token = runtime.instanceToken(of: w.instance), constantTimeEquals(key, token) { return true }
        if let sim = simulatorHost?.simulator, let token = sim.token(of: w.instance), constantTimeEquals(key, token) { return true }
        return false
    }
}
