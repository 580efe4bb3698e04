import Foundation

/// Percentiles, process figures from /proc, and the report line.
enum Stats {
    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        let rank = max(0, min(sorted.count - 1, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))
        return sorted[rank]
    }

    /// Percentiles of the latencies; empty (no key, so no NaN in the JSON) when nothing was measured.
    static func summary(_ latencies: [Double]) -> [String: Double] {
        guard !latencies.isEmpty else { return [:] }
        let s = latencies.sorted()
        return ["p50_ms": percentile(s, 50), "p90_ms": percentile(s, 90), "p99_ms": percentile(s, 99), "max_ms": s.last ?? .nan]
    }

    /// Resident memory of a process in KiB (VmRSS).
    static func rssKiB(pid: Int32) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Double(line.split(separator: " ", omittingEmptySubsequences: true)[1])
        }
        return nil
    }

    /// CPU seconds (user + system) a process used so far.
    static func cpuSeconds(pid: Int32) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return nil }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func selfCPUSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6 + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
    }

    /// Lifts the soft open-files limit to the hard one (each connection is a file).
    static func raiseFileLimit() -> Int {
        var l = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &l)
        l.rlim_cur = l.rlim_max
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &l)
        return Int(l.rlim_cur)
    }
}
