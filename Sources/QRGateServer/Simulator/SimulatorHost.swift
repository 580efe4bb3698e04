import Foundation
import Logging
import QRGateCore
import QRGateHTTP
import QRGateUpstream

/// Serves the Evolution simulator through an event loop: delayed and hanging answers on the loop's
/// timers, QR rotation on a timer, webhooks out through libcurl. Not Sendable: owned by the actor of
/// the loop that serves it (the gateway, or `SimulatorServer` alone), and run isolated to it.
public final class SimulatorHost {
    public let simulator: EvolutionSimulator
    let server: LWSServer
    let timers: LoopTimers
    let http: CurlMulti
    let logger: Logger
    private var rotationTimer: LoopTimers.ID?
    /// Webhooks go out one at a time, in order, as Evolution sends them.
    private var webhooks: [SimulatorWebhook] = []
    private var delivering = false
    static let maxQueuedWebhooks = 10_000

    public init(simulator: EvolutionSimulator, server: LWSServer, timers: LoopTimers, http: CurlMulti, logger: Logger) {
        self.simulator = simulator
        self.server = server
        self.timers = timers
        self.http = http
        self.logger = logger
    }

    /// Answers a simulator request (nil: answered later, or never for a simulated hang).
    public func http(_ request: HTTPRequest, connection: ConnectionID, isolation: isolated any Actor) -> HTTPResponse? {
        let reply = simulator.handle(request, now: timers.clock.now())
        tick(isolation: isolation)
        switch reply {
        case let .now(response):
            return response
        case let .after(seconds, response):
            timers.schedule(after: seconds) { [server] in server.respond(connection, response) }
            return nil
        case .never:
            return nil
        }
    }

    /// Rotates codes, sends webhooks, and arms the timer for the next rotation.
    public func tick(isolation: isolated any Actor) {
        webhooks.append(contentsOf: simulator.advance(now: timers.clock.now()))
        // A webhook target that is down must not make the queue grow without end: the oldest go first.
        if webhooks.count > Self.maxQueuedWebhooks {
            logger.warning("simulator webhook target is behind: dropping \(webhooks.count - Self.maxQueuedWebhooks) oldest webhooks")
            webhooks.removeFirst(webhooks.count - Self.maxQueuedWebhooks)
        }
        deliverNextWebhook(isolation: isolation)
        if let t = rotationTimer { timers.cancel(t) }
        rotationTimer = nil
        if let next = simulator.nextDeadline() {
            rotationTimer = timers.schedule(at: next) { [weak self] in
                self?.rotationTimer = nil
                self?.tick(isolation: isolation)
            }
        }
    }

    private func deliverNextWebhook(isolation: isolated any Actor) {
        guard !delivering, !webhooks.isEmpty else { return }
        delivering = true
        let hook = webhooks.removeFirst()
        let request = ClientRequest(method: "POST", url: hook.url, headers: [("Content-Type", "application/json")], body: hook.body, timeoutSeconds: 5)
        let http = http, logger = logger
        Task {
            _ = isolation
            if case let .failure(e) = await http.perform(request) { logger.warning("simulator webhook failed: \(e)") }
            self.delivering = false
            self.deliverNextWebhook(isolation: isolation)
        }
    }
}
