import ArgumentParser
import Foundation
import QRGateCore
import Logging
import QRGatePostgres
import QRGateStore

/// Operators' questions answered from the store, with or without a running gateway.
struct Sessions: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List sessions from the store: status, attempt, QR age, last error.")

    @Option(help: "Configuration file (JSON); store.path says where the database is.") var config = "Config/qrgate.json"
    @Option(help: "Only pending sessions with no fresh QR for more than this many seconds.") var stale: Double?
    @Option(help: "Only sessions in this status (idle, pending, connected, failed, disconnected).") var status: String?
    @Flag(help: "JSON lines instead of a table.") var json = false

    func run() throws {
        let store = try StoreAccess.open(config)
        defer { store.close() }
        let now = Date()
        var rows = try startUp { try await store.loadAll() }.map(\.0)
        if let status { rows = rows.filter { $0.state.status.rawValue == status } }
        if let stale {
            rows = rows.filter { $0.state.status == .pending && now.timeIntervalSince($0.state.qrUpdatedAt ?? $0.createdAt) > stale }
        }
        if json {
            for r in rows {
                let o: JSONValue = .object(["sessionId": .string(r.id), "status": .string(r.state.status.rawValue), "attempt": .int(r.state.attempt),
                                            "qrAgeSeconds": r.state.qrUpdatedAt.map { .int(Int(now.timeIntervalSince($0))) } ?? .null,
                                            "lastError": r.state.lastError.map { .string($0) } ?? .null])
                print(String(decoding: o.encoded(), as: UTF8.self))
            }
            return
        }
        print("SESSION".padding(toLength: 24, withPad: " ", startingAt: 0) + "STATUS        ATTEMPT  QR AGE   LAST ERROR")
        for r in rows {
            let age = r.state.qrUpdatedAt.map { "\(Int(now.timeIntervalSince($0)))s" } ?? "-"
            print(r.id.padding(toLength: 24, withPad: " ", startingAt: 0) + r.state.status.rawValue.padding(toLength: 14, withPad: " ", startingAt: 0)
                  + "\(r.state.attempt)".padding(toLength: 9, withPad: " ", startingAt: 0) + age.padding(toLength: 9, withPad: " ", startingAt: 0)
                  + (r.state.lastError ?? ""))
        }
        print("\(rows.count) session(s)")
    }
}

struct Cycles: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The last refresh cycles and their outcome.")

    @Option(help: "Configuration file (JSON).") var config = "Config/qrgate.json"
    @Option(help: "How many cycles.") var limit = 10

    func run() throws {
        let store = try StoreAccess.open(config)
        defer { store.close() }
        let cycles = try startUp { try await store.recentCycles(limit: limit) }
        print("STARTED (UTC)              DURATION  TOTAL  REFRESHED  FAILED")
        for c in cycles {
            print(SessionEventEncoding.iso8601(c.startedAt).padding(toLength: 27, withPad: " ", startingAt: 0)
                  + "\(c.durationMs)ms".padding(toLength: 10, withPad: " ", startingAt: 0) + "\(c.total)".padding(toLength: 7, withPad: " ", startingAt: 0)
                  + "\(c.refreshed)".padding(toLength: 11, withPad: " ", startingAt: 0) + "\(c.failed)")
        }
    }
}

enum StoreAccess {
    static func open(_ configPath: String) throws -> SessionStore {
        let cfg: Config
        do {
            cfg = try Config.load(path: configPath, required: configPath != "Config/qrgate.json", environment: ProcessInfo.processInfo.environment)
        } catch {
            throw ValidationError(error.description)
        }
        switch cfg.store.mode {
        case .memory:
            throw ValidationError("store.mode is memory: there is nothing stored to read")
        case .sqlite:
            guard FileManager.default.fileExists(atPath: cfg.store.path) else { throw ValidationError("no database at \(cfg.store.path) (store.path)") }
            return try SQLiteStore(path: cfg.store.path, eventCapacity: cfg.events.logCapacity, eventMaxAgeSeconds: cfg.events.maxAgeSeconds)
        case .postgres:
            var logger = Logger(label: "qrgate")
            logger.logLevel = .error
            let quiet = logger
            return try startUp {
                try await PostgresStore.open(url: cfg.store.url, sealKey: cfg.store.sealKey, eventCapacity: cfg.events.logCapacity,
                                             eventMaxAgeSeconds: cfg.events.maxAgeSeconds, logger: quiet)
            }
        }
    }
}
