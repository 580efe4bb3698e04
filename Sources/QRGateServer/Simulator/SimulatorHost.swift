import DequeModule
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
    /// Webhooks waiting, per instance in the order they were made (one instance's go out one at a time,
    /// in order, as Evolution sends them); different instances' go out side by side.
    private var waiting: [String: Deque<SimulatorWebhook>] = [:]
    /// Instances with webhooks waiting and none out, in the order they became so.
    private var ready = Deque<String>()
    /// Instances with a webhook out.
    private var sending: Set<String> = []
    private var queued = 0
    private var dropped = 0
    private var failed = 0
    private var lastFailure = ""
    private var lastReport: Date?
    static let maxQueuedWebhooks = 10_000
    /// Webhooks out at once: a fleet's rotations (3 000 instances: 150 a second) must not wait in one line.
    static let maxSending = 16

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
        for hook in simulator.advance(now: timers.clock.now()) { enqueue(hook) }
        // A webhook target that is down must not make the queue grow without end: the oldest go first.
        // Every drop either removes a webhook or forgets an instance with none left, so this ends.
        while queued > Self.maxQueuedWebhooks, let instance = ready.first ?? waiting.keys.first { drop(from: instance) }
        report()
        send(isolation: isolation)
        if let t = rotationTimer { timers.cancel(t) }
        rotationTimer = nil
        if let next = simulator.nextDeadline() {
            rotationTimer = timers.schedule(at: next) { [weak self] in
                self?.rotationTimer = nil
                self?.tick(isolation: isolation)
            }
        }
    }

    private func enqueue(_ hook: SimulatorWebhook) {
        queued += 1
        if waiting[hook.instance] == nil, !sending.contains(hook.instance) { ready.append(hook.instance) }
        waiting[hook.instance, default: []].append(hook)
    }

    /// Said at most every 10 s: a fleet's burst drops on every tick, and a target that is down fails
    /// sixteen webhooks at a time.
    private func report() {
        let now = timers.clock.now()
        guard dropped > 0 || failed > 0, lastReport.map({ now.timeIntervalSince($0) >= 10 }) ?? true else { return }
        if dropped > 0 { logger.warning("simulator webhook target is behind: dropped \(dropped) oldest webhooks (\(queued) waiting)") }
        if failed > 0 { logger.warning("simulator webhooks failed: \(failed), the last: \(lastFailure)") }
        dropped = 0
        failed = 0
        lastReport = now
    }

    /// Drops the oldest webhook of `instance`, or forgets the instance when it has none waiting.
    private func drop(from instance: String) {
        guard var q = waiting[instance], !q.isEmpty else {
            waiting[instance] = nil
            if let i = ready.firstIndex(of: instance) { ready.remove(at: i) }
            return
        }
        q.removeFirst()
        queued -= 1
        dropped += 1
        if q.isEmpty {
            waiting[instance] = nil
            if let i = ready.firstIndex(of: instance) { ready.remove(at: i) }
        } else {
            waiting[instance] = q
        }
    }

    private func send(isolation: isolated any Actor) {
        while sending.count < Self.maxSending, let instance = ready.popFirst() {
            guard var q = waiting.removeValue(forKey: instance), let hook = q.popFirst() else { continue }
            if !q.isEmpty { waiting[instance] = q }
            queued -= 1
            sending.insert(instance)
            let request = ClientRequest(method: "POST", url: hook.url, headers: [("Content-Type", "application/json")], body: simulator.body(of: hook), timeoutSeconds: 5)
            let http = http
            Task {
                _ = isolation
                let result = await http.perform(request)
                isolation.preconditionIsolated("simulator webhook queue off its loop")
                // A target that answers but refuses (a 401 for a wrong key, a 404 for a wrong path) fails too.
                let failure: String? = switch result {
                case let .failure(e): "\(e)"
                case let .success(r) where r.status >= 400: "HTTP \(r.status)"
                case .success: nil
                }
                if let failure {
                    self.failed += 1
                    self.lastFailure = failure
                    self.report()
                }
                self.sending.remove(instance)
                if self.waiting[instance] != nil { self.ready.append(instance) }
                self.send(isolation: isolation)
            }
        }
    }
}
