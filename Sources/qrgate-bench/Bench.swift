import ArgumentParser
import Foundation
import QRGateHTTP

@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qrgate-bench",
        abstract: "Load generator: WebSocket subscribers on libwebsockets, latency from each event's timestamp to receipt.",
        subcommands: [Fanout.self, Countdown.self, Firehose.self, Footprint.self, Refresh.self])
}

enum ClientLoop: String, ExpressibleByArgument, CaseIterable { case libev, poll }

struct Common: ParsableArguments {
    @Option(help: "WebSocket URL of the server under test.") var url: String
    @Option(help: "Name of the server in the report.") var label = "qrgate"
    @Option(help: "PID of the server, for its RSS and CPU from /proc; repeat it for a server made of several processes (CPU is summed, RSS is the first's).")
    var serverPid: [Int32] = []
    @Option(help: "Write the JSON report here (else stdout).") var out: String?
    @Option(help: "Seconds to wait for all clients to connect and subscribe.") var setupTimeout: Double = 180
    @Option(help: "Handshakes in flight at once.") var connectWave = 256
    @Option(help: "Times a failed handshake is tried again (for peers whose proxies refuse a few under load).") var connectRetries = 0
    @Option(help: "How the load client waits for its sockets: libev (epoll, as the gateway) or poll (lws's own loop, which looks at every socket on every turn: the load generator before 2026-12-02).")
    var clientLoop: ClientLoop = .libev

    func target() throws -> LoadClient.Target {
        guard let u = URL(string: url), let host = u.host, let port = u.port else { throw ValidationError("url must be ws://HOST:PORT/PATH") }
        return LoadClient.Target(host: host, port: port, path: u.path.isEmpty ? "/" : u.path + (u.query.map { "?" + $0 } ?? ""))
    }

    func emit(_ report: [String: Any]) throws {
        var r = report
        r["server"] = label
        r["client_cpu_s"] = Stats.selfCPUSeconds()
        r["client_loop"] = clientLoop.rawValue
        if let pid = serverPid.first {
            r["server_rss_kib"] = Stats.rssKiB(pid: pid) ?? NSNull()
            r["server_cpu_s"] = serverCPUSeconds() ?? NSNull()
        }
        let data = try JSONSerialization.data(withJSONObject: r, options: [.sortedKeys])
        if let out { try data.write(to: URL(fileURLWithPath: out)) } else { print(String(decoding: data, as: UTF8.self)) }
        let s = { (k: String) in (r[k] as? Double).map { String(format: "%.1f", $0) } ?? "-" }
        FileHandle.standardError.write(Data("\(r["scenario"] ?? "") \(label): p50 \(s("p50_ms")) ms, p99 \(s("p99_ms")) ms, max \(s("max_ms")) ms, delivered \(r["delivered"] ?? "-")/\(r["expected"] ?? "-")\n".utf8))
    }

    /// CPU seconds the server's processes have used so far.
    func serverCPUSeconds() -> Double? {
        guard !serverPid.isEmpty else { return nil }
        var total = 0.0
        for pid in serverPid {
            guard let c = Stats.cpuSeconds(pid: pid) else { return nil }
            total += c
        }
        return total
    }

    /// Opens `clients` subscribers and waits until each is subscribed (or open, with no subscribe message).
    func connect(_ client: LoadClient, clients: Int) throws -> Double {
        _ = Stats.raiseFileLimit()
        let start = Date()
        client.maxInFlightConnects = max(1, connectWave)
        client.connectRetries = max(0, connectRetries)
        try client.start(clients: clients)
        let deadline = start.addingTimeInterval(setupTimeout)
        while client.readyCount + client.failed < clients {
            guard Date() < deadline else { throw ValidationError("only \(client.readyCount) of \(clients) clients ready after \(setupTimeout) s (\(client.failed) failed)") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        if client.retried > 0 {
            FileHandle.standardError.write(Data("\(label): \(client.retried) handshakes failed once and were tried again\n".utf8))
        }
        if client.failed > 0 {
            throw ValidationError("\(client.failed) of \(clients) connections failed (first: \(client.firstFailure ?? "no reason given"))")
        }
        return Double(clients) / Date().timeIntervalSince(start)
    }
}

func post(_ url: String, _ body: String) throws -> ClientResponse {
    try HTTPClient.perform(ClientRequest(method: "POST", url: url, headers: [("Content-Type", "application/json")],
                                         body: Array(body.utf8), timeoutSeconds: 120)).get()
}

/// One event to N subscribers of one session, K times.
struct Fanout: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "N subscribers; each trigger makes one message that all of them must receive.")
    @OptionGroup var common: Common
    @Option(help: "Subscribers.") var clients = 1000
    @Option(help: "Text each client sends once open; {i} is its number. Empty: none (peers broadcast to all). The default asks for what the served page renders (the SVG).")
    var subscribe = #"{"op":"subscribe","session":"demo","formats":["svg"]}"#
    @Option(help: "HTTP endpoint that makes one event when POSTed.") var triggerURL: String
    @Option(help: "Body of the trigger POST.") var triggerBody = "{}"
    @Option(help: "HTTP method of the trigger (GET for servers that only take GET).") var triggerMethod = "POST"
    @Option(help: "Events to send.") var rounds = 5
    @Option(help: "Substring that marks the measured messages.") var match = "qr_generated"

    @Option(help: "Client processes sharing the subscribers, for when one client thread would be the bottleneck.") var processes = 1
    @Option(help: ArgumentHelp("Internal: run as worker I of P (I/P).", visibility: .hidden)) var worker: String?
    @Option(help: "Seconds to wait after each trigger when several processes share the clients.") var roundWait: Double = 3

    func run() throws {
        if let worker { return try runWorker(worker) }
        if processes > 1 { return try runParent() }
        let subscribe = subscribe
        let client = LoadClient(target: try common.target(), match: match, libev: common.clientLoop == .libev) { i in
            subscribe.isEmpty ? nil : Array(subscribe.replacingOccurrences(of: "{i}", with: String(i)).utf8)
        }
        let rate = try common.connect(client, clients: clients)
        Thread.sleep(forTimeInterval: 0.5)
        _ = client.take()
        var all: [Double] = [], delivered = 0, bytes = 0
        let started = Date()
        let cpu0 = common.serverCPUSeconds()
        for _ in 0..<rounds {
            try trigger()
            let deadline = Date().addingTimeInterval(15)
            var got = (latencies: [Double](), received: 0, bytes: 0, clientsReached: 0)
            while Date() < deadline {
                let t = client.take()
                got.latencies += t.latencies; got.received += t.received; got.bytes += t.bytes
                if got.received >= clients { break }
                Thread.sleep(forTimeInterval: 0.02)
            }
            all += got.latencies; delivered += got.received; bytes += got.bytes
            Thread.sleep(forTimeInterval: 0.3)
        }
        let elapsed = Date().timeIntervalSince(started)
        let roundsCPU = cpu0.flatMap { c0 in common.serverCPUSeconds().map { $0 - c0 } }
        client.stop()
        try report(all, delivered: delivered, bytes: bytes, elapsed: elapsed, rate: rate, clientCPU: nil, roundsCPU: roundsCPU)
    }

    func trigger() throws {
        _ = try HTTPClient.perform(ClientRequest(method: triggerMethod, url: triggerURL, headers: [("Content-Type", "application/json")],
                                                 body: triggerMethod == "GET" ? nil : Array(triggerBody.utf8), timeoutSeconds: 120)).get()
    }

    func report(_ all: [Double], delivered: Int, bytes: Int, elapsed: Double, rate: Double, clientCPU: Double?, roundsCPU: Double?) throws {
        var r: [String: Any] = Stats.summary(all)
        r.merge(["scenario": "fanout", "clients": clients, "rounds": rounds, "delivered": delivered, "expected": clients * rounds,
                 "bytes_per_message": delivered > 0 ? bytes / delivered : 0, "messages_per_s": Double(delivered) / elapsed,
                 "connections_per_s": rate, "client_processes": processes]) { $1 }
        if let clientCPU { r["client_cpu_s_all_processes"] = clientCPU }
        // The server's CPU while the rounds ran (connection set-up excluded), per delivered message.
        if let roundsCPU {
            r["server_cpu_rounds_s"] = roundsCPU
            if delivered > 0 { r["server_us_per_message"] = roundsCPU / Double(delivered) * 1e6 }
        }
        try common.emit(r)
    }

    /// A worker: its share of the clients; "ready" once subscribed; on "done" from the parent, its figures as JSON.
    func runWorker(_ spec: String) throws {
        let parts = spec.split(separator: "/").compactMap { Int($0) }
        guard parts.count == 2 else { throw ValidationError("--worker I/P") }
        let share = clients / parts[1] + (parts[0] < clients % parts[1] ? 1 : 0)
        let subscribe = subscribe
        let client = LoadClient(target: try common.target(), match: match, libev: common.clientLoop == .libev) { i in
            subscribe.isEmpty ? nil : Array(subscribe.replacingOccurrences(of: "{i}", with: String(i)).utf8)
        }
        let rate = try common.connect(client, clients: share)
        Thread.sleep(forTimeInterval: 0.3)
        _ = client.take()
        FileHandle.standardOutput.write(Data("ready \(rate)\n".utf8))
        _ = Swift.readLine()
        let t = client.take()
        client.stop()
        let out: [String: Any] = ["latencies": t.latencies, "received": t.received, "bytes": t.bytes, "cpu": Stats.selfCPUSeconds(), "rate": rate]
        FileHandle.standardOutput.write(try JSONSerialization.data(withJSONObject: out) + Data("\n".utf8))
    }

    /// Spawns the workers, waits until all are subscribed, triggers, and merges what they measured.
    func runParent() throws {
        var workers: [(Process, Pipe, Pipe)] = []
        for i in 0..<processes {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0].hasPrefix("/") ? CommandLine.arguments[0]
                                  : FileManager.default.currentDirectoryPath + "/" + CommandLine.arguments[0])
            p.arguments = ["fanout", "--url", common.url, "--clients", String(clients), "--subscribe", subscribe, "--match", match,
                           "--trigger-url", triggerURL, "--worker", "\(i)/\(processes)", "--setup-timeout", String(common.setupTimeout),
                           "--client-loop", common.clientLoop.rawValue]
            let input = Pipe(), output = Pipe()
            p.standardInput = input
            p.standardOutput = output
            try p.run()
            workers.append((p, input, output))
        }
        var rate = 0.0
        for (_, _, out) in workers {
            guard let line = Self.readLine(out.fileHandleForReading), line.hasPrefix("ready") else { throw ValidationError("a worker did not get ready") }
            rate += Double(line.split(separator: " ").last ?? "0") ?? 0
        }
        let started = Date()
        let cpu0 = common.serverCPUSeconds()
        for _ in 0..<rounds {
            try trigger()
            Thread.sleep(forTimeInterval: roundWait)
        }
        let elapsed = Date().timeIntervalSince(started)
        let roundsCPU = cpu0.flatMap { c0 in common.serverCPUSeconds().map { $0 - c0 } }
        var all: [Double] = [], delivered = 0, bytes = 0, cpu = 0.0
        for (p, input, out) in workers {
            input.fileHandleForWriting.write(Data("done\n".utf8))
            guard let line = Self.readLine(out.fileHandleForReading), let data = line.data(using: .utf8),
                  let o = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { throw ValidationError("a worker sent no figures") }
            all += (o["latencies"] as? [Double]) ?? []
            delivered += (o["received"] as? Int) ?? 0
            bytes += (o["bytes"] as? Int) ?? 0
            cpu += (o["cpu"] as? Double) ?? 0
            p.waitUntilExit()
        }
        try report(all, delivered: delivered, bytes: bytes, elapsed: elapsed, rate: rate, clientCPU: cpu, roundsCPU: roundsCPU)
    }

    static func readLine(_ h: FileHandle) -> String? {
        var bytes: [UInt8] = []
        while true {
            let d = h.readData(ofLength: 1)
            if d.isEmpty { return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self) }
            if d[0] == 0x0A { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(d[0])
        }
    }
}

/// Many sessions with a few subscribers each, countdowns ticking once a second.
struct Countdown: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "S sessions × M subscribers with 1 Hz countdowns; latency of every countdown.")
    @OptionGroup var common: Common
    @Option(help: "Sessions (ids {prefix}0…{prefix}{S-1}, which must exist).") var sessions = 100
    @Option(help: "Subscribers per session.") var perSession = 10
    @Option(help: "Seconds to measure.") var duration: Double = 10
    @Option(help: "Session id prefix.") var prefix = "s"
    @Option(help: "The action whose latency is measured (countdown, or qr_generated for a fleet's rotations).") var match = "countdown"
    @Option(help: "Formats to subscribe with, comma-separated (e.g. svg, as the page); none: the standard frame.") var formats = ""

    func run() throws {
        let s = sessions, prefix = prefix
        let f = formats.isEmpty ? "" : #","formats":["# + formats.split(separator: ",").map { "\"\($0)\"" }.joined(separator: ",") + "]"
        let client = LoadClient(target: try common.target(), match: "\"\(match)\"", libev: common.clientLoop == .libev) { i in
            Array(#"{"op":"subscribe","session":"\#(prefix)\#(i % s)""#.utf8) + Array(f.utf8) + Array("}".utf8)
        }
        let total = sessions * perSession
        let rate = try common.connect(client, clients: total)
        Thread.sleep(forTimeInterval: 1)
        _ = client.take()
        let cpu0 = common.serverCPUSeconds(), clientCPU0 = Stats.selfCPUSeconds()
        Thread.sleep(forTimeInterval: duration)
        let t = client.take()
        var r: [String: Any] = Stats.summary(t.latencies)
        r["client_cpu_share"] = (Stats.selfCPUSeconds() - clientCPU0) / duration
        r.merge(["scenario": match == "countdown" ? "countdown" : "fleet-\(match)", "clients": total, "sessions": sessions, "delivered": t.received,
                 "expected": Int(Double(total) * duration), "messages_per_s": Double(t.received) / duration, "connections_per_s": rate]) { $1 }
        if let c0 = cpu0, let c1 = common.serverCPUSeconds() { r["server_cpu_share"] = (c1 - c0) / duration }
        client.stop()
        try common.emit(r)
    }
}

/// One subscriber of every session while S pending sessions tick once a second: what a backend service
/// watching the whole fleet on one socket gets.
struct Firehose: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "One \"*\" subscriber of S pending sessions with 1 Hz countdowns: events/s and latency.")
    @OptionGroup var common: Common
    @Option(help: "Pending sessions the gateway holds (for the expected count).") var sessions = 10_000
    @Option(help: "Seconds to measure, after the snapshots are in.") var duration: Double = 20
    @Option(help: "Seconds allowed for the snapshot stream before measuring.") var settle: Double = 5
    @Option(help: "The subscription's formats, comma-separated.") var formats = "code"

    func run() throws {
        let names = formats.split(separator: ",").map { "\"\($0)\"" }.joined(separator: ",")
        let client = LoadClient(target: try common.target(), match: "\"countdown\"", libev: common.clientLoop == .libev) { _ in
            Array(#"{"op":"subscribe","session":"*","formats":[\#(names)]}"#.utf8)
        }
        _ = try common.connect(client, clients: 1)
        Thread.sleep(forTimeInterval: settle)
        _ = client.take()
        let cpu0 = common.serverCPUSeconds()
        Thread.sleep(forTimeInterval: duration)
        let t = client.take()
        var r: [String: Any] = Stats.summary(t.latencies)
        r.merge(["scenario": "firehose", "clients": 1, "sessions": sessions, "delivered": t.received,
                 "expected": Int(Double(sessions) * duration), "messages_per_s": Double(t.received) / duration,
                 "bytes_per_message": t.received > 0 ? t.bytes / t.received : 0, "client_cpu_s": Stats.selfCPUSeconds()]) { $1 }
        if let c0 = cpu0, let c1 = common.serverCPUSeconds() {
            r["server_cpu_share"] = (c1 - c0) / duration
            if t.received > 0 { r["server_us_per_message"] = (c1 - c0) * 1e6 / Double(t.received) }
        }
        client.stop()
        try common.emit(r)
    }
}

/// Resident memory per idle subscribed connection.
struct Footprint: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "N idle subscribers: server RSS growth per connection.")
    @OptionGroup var common: Common
    @Option(help: "Subscribers.") var clients = 1000
    @Option(help: "Subscribe message ({i} = client number); empty for none.") var subscribe = #"{"op":"subscribe","session":"demo"}"#

    func run() throws {
        guard let pid = common.serverPid.first, let rss0 = Stats.rssKiB(pid: pid) else { throw ValidationError("--server-pid is required (RSS from /proc)") }
        let subscribe = subscribe
        let client = LoadClient(target: try common.target(), match: "\u{0}never", libev: common.clientLoop == .libev) { i in
            subscribe.isEmpty ? nil : Array(subscribe.replacingOccurrences(of: "{i}", with: String(i)).utf8)
        }
        let rate = try common.connect(client, clients: clients)
        Thread.sleep(forTimeInterval: 2)
        let rss1 = Stats.rssKiB(pid: pid) ?? rss0
        let r: [String: Any] = ["scenario": "footprint", "clients": clients, "rss_before_kib": rss0, "rss_after_kib": rss1,
                                "kib_per_connection": (rss1 - rss0) / Double(clients), "connections_per_s": rate,
                                "delivered": clients, "expected": clients]
        client.stop()
        try common.emit(r)
    }
}

/// One refresh cycle over S pending sessions against an upstream answering in L ms.
struct Refresh: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Time one refresh cycle over S pending sessions with a slow upstream.")
    @Option(help: "HTTP base of the gateway (simulator mode).") var base: String
    @Option(help: "Sessions.") var sessions = 100
    @Option(help: "Upstream latency, ms.") var latencyMs = 1000
    @Option var out: String?
    @Option var serverPid: Int32?

    func run() throws {
        for i in 0..<sessions { _ = try post(base + "/api/v1/sessions", #"{"sessionId":"r\#(i)"}"#) }
        Thread.sleep(forTimeInterval: 2)
        _ = try post(base + "/simulator/faults", #"{"latencyMs":\#(latencyMs)}"#)
        let t0 = Date()
        let r = try post(base + "/functions/v1/refresh-qr-codes", "{}")
        let seconds = Date().timeIntervalSince(t0)
        let body = (try? JSONSerialization.jsonObject(with: Data(r.body))) as? [String: Any] ?? [:]
        _ = try? HTTPClient.perform(ClientRequest(method: "DELETE", url: base + "/simulator/faults")).get()
        let report: [String: Any] = ["scenario": "refresh", "server": "qrgate", "sessions": sessions, "upstream_latency_ms": latencyMs,
                                     "cycle_seconds": seconds, "total_instances": body["total_instances"] ?? NSNull(),
                                     "refreshed": body["refreshed"] ?? NSNull(), "failed": body["failed"] ?? NSNull(),
                                     "delivered": body["refreshed"] ?? 0, "expected": sessions, "client_cpu_s": Stats.selfCPUSeconds()]
        let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
        if let out { try data.write(to: URL(fileURLWithPath: out)) } else { print(String(decoding: data, as: UTF8.self)) }
        FileHandle.standardError.write(Data("refresh: \(sessions) sessions at \(latencyMs) ms upstream → cycle \(String(format: "%.2f", seconds)) s\n".utf8))
    }
}
