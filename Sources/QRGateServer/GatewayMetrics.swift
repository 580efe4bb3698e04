import CoreMetrics
import Foundation
import Metrics
import Prometheus
import QRGateCore

/// The gateway's metrics through swift-metrics, exported by swift-prometheus from a registry of this
/// gateway's own (so several gateways in one test process do not mix). Thread-safe: the handlers are.
public final class GatewayMetrics: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory
    private let lock = NSLock()
    private var counters: [String: CoreMetrics.Counter] = [:]
    private var gauges: [String: CoreMetrics.Gauge] = [:]
    private var timers: [String: CoreMetrics.Timer] = [:]
    private var lastCoalesced = 0
    private var lastSlow = 0
    private var totals: [String: Int] = [:]

    public init() {
        var f = PrometheusMetricsFactory(registry: registry)
        f.defaultDurationHistogramBuckets = [.milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                                             .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                                             .seconds(2), .seconds(5), .seconds(10), .seconds(30)]
        factory = f
    }

    private func key(_ label: String, _ dims: [(String, String)]) -> String { label + dims.map { "|\($0.0)=\($0.1)" }.joined() }

    public func count(_ label: String, _ dims: [(String, String)] = [], by n: Int = 1) {
        lock.lock()
        let k = key(label, dims)
        let c = counters[k] ?? CoreMetrics.Counter(label: label, dimensions: dims, factory: factory)
        counters[k] = c
        lock.unlock()
        c.increment(by: n)
    }

    public func gauge(_ label: String, _ dims: [(String, String)] = [], _ value: Double) {
        lock.lock()
        let k = key(label, dims)
        let g = gauges[k] ?? CoreMetrics.Gauge(label: label, dimensions: dims, factory: factory)
        gauges[k] = g
        lock.unlock()
        g.record(value)
    }

    public func time(_ label: String, _ dims: [(String, String)] = [], seconds: Double) {
        timer(label, dims).recordNanoseconds(Int64(seconds * 1e9))
    }

    /// A `Duration` as swift-metrics converts it (saturating, not overflowing).
    public func time(_ label: String, _ dims: [(String, String)] = [], duration: Duration) {
        timer(label, dims).record(duration: duration)
    }

    private func timer(_ label: String, _ dims: [(String, String)]) -> CoreMetrics.Timer {
        lock.lock()
        defer { lock.unlock() }
        let k = key(label, dims)
        let t = timers[k] ?? CoreMetrics.Timer(label: label, dimensions: dims, factory: factory)
        timers[k] = t
        return t
    }

    /// Counters the socket layer keeps as running totals become Prometheus counters by their deltas.
    func syncTotals(coalesced: Int, slowConsumers: Int) {
        lock.lock()
        let dc = coalesced - lastCoalesced, ds = slowConsumers - lastSlow
        lastCoalesced = coalesced; lastSlow = slowConsumers
        lock.unlock()
        count("qrgate_frames_coalesced_total", by: max(0, dc))
        count("qrgate_slow_consumers_closed_total", by: max(0, ds))
    }

    /// A running total kept elsewhere (the cluster's) as a Prometheus counter, by its delta since the last scrape.
    func syncTotal(_ label: String, _ total: Int, _ dims: [(String, String)] = []) {
        let k = key(label, dims)
        lock.lock()
        let d = total - (totals[k] ?? 0)
        totals[k] = total
        lock.unlock()
        count(label, dims, by: max(0, d))
    }

    /// Prometheus text exposition format.
    public func render() -> [UInt8] { registry.emitToBuffer() }
}
