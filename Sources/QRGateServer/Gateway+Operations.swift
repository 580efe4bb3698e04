import Foundation
import QRGateCore
import QRGateHTTP
import QRGateUpstream

extension Gateway {
    /// GET /metrics: Prometheus text. Gauges are read off the live state at scrape time.
    func metricsEndpoint(connection: ConnectionID) -> HTTPResponse? {
        Task {
            // Back on the loop after the await: this task is isolated to the gateway.
            let status = await self.credentials.status()
            do {
                let m = self.metrics
                for role in [Role.browser, .service, .admin] {
                    m.gauge("qrgate_connections", [("role", role.rawValue)], Double(self.sockets.values.filter { $0.role == role }.count))
                }
                m.gauge("qrgate_subscriptions", [], Double(self.hub.subscriptionCount))
                m.gauge("qrgate_outbox_bytes", [], Double(self.server.unsentBytes))
                let statuses = self.runtime.registry.sessions.values.map(\.machine.status)
                for s in [SessionMachine.Status.idle, .pending, .connected, .failed, .disconnected] {
                    m.gauge("qrgate_sessions", [("status", s.rawValue)], Double(statuses.filter { $0 == s }.count))
                }
                for s in ["valid", "expiring", "renewing", "fallback", "missing"] {
                    m.gauge("qrgate_upstream_credential_state", [("state", s)], status.state.rawValue == s ? 1 : 0)
                }
                m.syncTotals(coalesced: self.server.coalesced, slowConsumers: self.server.slowConsumersClosed)
                m.syncTotal("qrgate_idle_peers_dropped_total", self.server.idleDropped)
                m.syncTotal("qrgate_connections_shed_total", self.server.shedAtFileLimit)
                m.syncTotal("qrgate_qr_pictures_drawn_total", self.runtime.frames.drawn.svg.load(ordering: .relaxed), [("format", "svg")])
                m.syncTotal("qrgate_qr_pictures_drawn_total", self.runtime.frames.drawn.png.load(ordering: .relaxed), [("format", "png")])
                m.gauge("qrgate_upstream_concurrency_limit", [], Double(self.http.currentLimit))
                // A gauge of a monotonic per-loop count: how evenly the kernel spreads connections.
                for (i, n) in self.server.acceptedPerLoop.enumerated() {
                    m.gauge("qrgate_loop_connections_accepted", [("loop", String(i))], Double(n))
                }
                if let cluster = self.runtime.cluster {
                    let st = cluster.stats()
                    m.gauge("qrgate_cluster_owned_sessions", [], Double(self.runtime.owned.count))
                    m.gauge("qrgate_cluster_followed_sessions", [], Double(self.runtime.registry.sessions.count - self.runtime.owned.count))
                    m.gauge("qrgate_cluster_live_nodes", [], Double(st.liveNodes))
                    m.gauge("qrgate_cluster_bus_lag_seconds", [], st.busLagSeconds)
                    m.syncTotal("qrgate_cluster_lease_renewals_total", st.renewals)
                    m.syncTotal("qrgate_cluster_lease_renewal_failures_total", st.renewalFailures)
                    m.syncTotal("qrgate_cluster_sessions_claimed_total", st.claims)
                    m.syncTotal("qrgate_cluster_sessions_handed_off_total", st.handoffs)
                    m.syncTotal("qrgate_cluster_bus_messages_total", st.busMessages)
                }
                self.server.respond(connection, HTTPResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: .bytes(m.render())))
            }
        }
        return nil
    }

    /// GET /readyz: the store takes writes and the upstream answers (or the simulator is in-process).
    func readyz(connection: ConnectionID) -> HTTPResponse? {
        var reasons: [String] = runtime.store.problem().map { ["store: \($0)"] } ?? []
        if let p = runtime.cluster?.stats().problem { reasons.append("cluster: \(p)") }
        if simulatorHost != nil || config.upstream.mode == .simulator && config.upstream.baseURL.isEmpty {
            return readyAnswer(reasons, upstream: "simulator in-process")
        }
        // Any HTTP answer from the upstream's base URL means it is reachable; the body does not matter.
        let probe = ClientRequest(url: runtime.upstream?.baseURL ?? config.upstream.baseURL, timeoutSeconds: 2, maxResponseBytes: 64 * 1024)
        Task {
            let result = await self.http.perform(probe)
            var reasons = reasons
            var upstream = "reachable"
            if case let .failure(e) = result {
                upstream = "unreachable: \(e)"
                reasons.append("upstream \(upstream)")
            }
            self.server.respond(connection, self.readyAnswer(reasons, upstream: upstream))
        }
        return nil
    }

    private func readyAnswer(_ reasons: [String], upstream: String) -> HTTPResponse {
        let ready = reasons.isEmpty
        return .json(ready ? 200 : 503, ["status": ready ? "ready" : "not ready", "reasons": reasons,
                                         "store": runtime.store.problem() ?? "ok", "upstream": upstream])
    }
}
