private import CCurl
import Foundation

/// libcurl's multi interface on its own thread: many transfers at once, at most `limit.slots` in flight
/// (fixed at `maxConcurrent`, or adapted to the upstream's answers up to it: `AdaptiveLimit`), each with
/// its own deadline, so one slow peer never holds up the others.
///
/// The thread drives libcurl through its socket API (`curl_multi_socket_action`): libcurl names the sockets
/// it waits for, the thread waits for them with epoll and tells libcurl which one is ready. The simpler
/// `curl_multi_perform` + `curl_multi_poll` it replaced checks every running transfer's socket with a
/// `poll()` of its own on every wake-up: with 200 requests in flight that was 12 000 `poll()` calls a second
/// for an idle fleet of 3 000 sessions, a quarter of the process's CPU.
///
/// `@unchecked Sendable`: a thin wrapper of the multi handle and its epoll set, which only its thread
/// touches; the queue, the in-flight count and the limit are guarded by `lock`.
public final class CurlMulti: @unchecked Sendable {
    public let maxConcurrent: Int
    private var limit: AdaptiveLimit
    private let lock = NSLock()
    private var queue: [(ClientRequest, @Sendable (Result<ClientResponse, HTTPClientError>) -> Void)] = []
    private var stopped = false
    // Owned by the multi thread.
    private let multi: UnsafeMutableRawPointer
    private let epoll: Int32
    /// Written to wake the thread (a new request, shutdown); never closed before the thread ends.
    private let wake: Int32
    /// When libcurl wants `CURL_SOCKET_TIMEOUT` (its timer callback); nil: no timeout pending.
    private var curlDeadline: ContinuousClock.Instant?
    private var active: [UnsafeMutableRawPointer: (CurlTransfer, @Sendable (Result<ClientResponse, HTTPClientError>) -> Void, started: ContinuousClock.Instant)] = [:]
    private var thread: Thread?
    private let done = DispatchSemaphore(value: 0)

    /// With `adaptive`, the limit starts at `min(16, maxConcurrent)` and moves between `min(4, maxConcurrent)`
    /// and `maxConcurrent` with the answers (answers slower than `slowSeconds` count as overload);
    /// without, it stays at `maxConcurrent`.
    public init(maxConcurrent: Int, adaptive: Bool = false, slowSeconds: Double = .infinity) {
        self.maxConcurrent = max(1, maxConcurrent)
        limit = adaptive ? AdaptiveLimit(initial: 16, min: 4, max: self.maxConcurrent, slowSeconds: slowSeconds) : .fixed(self.maxConcurrent)
        _ = CurlTransfer.globalInit
        multi = curl_multi_init()!
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        wake = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        precondition(epoll >= 0 && wake >= 0, "epoll_create1 / eventfd failed: errno \(errno)")
        precondition(qg_epoll_watch(epoll, wake, CURL_POLL_IN) == 0, "epoll_ctl failed: errno \(errno)")
        let me = Unmanaged.passUnretained(self).toOpaque()
        qg_curl_multi_setopt_ptr(multi, CURLMOPT_SOCKETDATA, me)
        qg_curl_multi_setopt_ptr(multi, CURLMOPT_TIMERDATA, me)
        qg_curl_multi_setopt_socketfunction(multi) { _, fd, what, data, _ in
            guard let data else { return -1 }
            let multi = Unmanaged<CurlMulti>.fromOpaque(data).takeUnretainedValue()
            return qg_epoll_watch(multi.epoll, fd, what) == 0 ? 0 : -1
        }
        qg_curl_multi_setopt_timerfunction(multi) { _, ms, data in
            guard let data else { return -1 }
            let multi = Unmanaged<CurlMulti>.fromOpaque(data).takeUnretainedValue()
            multi.curlDeadline = ms < 0 ? nil : .now + .milliseconds(ms)
            return 0
        }
        let t = Thread { [self] in run() }
        t.name = "qrgate-curl"
        thread = t
        t.start()
    }

    deinit {
        curl_multi_cleanup(multi)
        close(epoll)
        close(wake)
    }

    private func wakeUp() {
        var one: UInt64 = 1
        _ = write(wake, &one, 8)
    }

    /// Queues a transfer; `completion` runs on the multi thread.
    public func submit(_ request: ClientRequest, completion: @escaping @Sendable (Result<ClientResponse, HTTPClientError>) -> Void) {
        lock.lock()
        if stopped {
            lock.unlock()
            completion(.failure(.transport("client shut down")))
            return
        }
        queue.append((request, completion))
        lock.unlock()
        wakeUp()
    }

    public func perform(_ request: ClientRequest) async -> Result<ClientResponse, HTTPClientError> {
        await withCheckedContinuation { cont in submit(request) { cont.resume(returning: $0) } }
    }

    /// Transfers queued or running right now.
    public var pending: Int {
        lock.lock(); defer { lock.unlock() }
        return queue.count + inFlight
    }
    private var inFlight = 0

    /// Transfers allowed in flight right now.
    public var currentLimit: Int {
        lock.lock(); defer { lock.unlock() }
        return limit.slots
    }

    /// An answer that says the upstream is overloaded (or unreachable) rather than that the request was wrong.
    static func isOverload(_ r: Result<ClientResponse, HTTPClientError>) -> Bool {
        switch r {
        case let .success(response): [429, 502, 503, 504].contains(response.status)
        case .failure(.timeout), .failure(.connectionRefused), .failure(.transport): true
        case .failure: false
        }
    }

    /// Fails what is queued, aborts what runs, and ends the thread.
    public func shutdown() {
        lock.lock()
        let first = !stopped
        stopped = true
        lock.unlock()
        guard first else { return }
        wakeUp()
        done.wait()
    }

    private func run() {
        var running: Int32 = 0
        var fds = [Int32](repeating: 0, count: 256), bits = [Int32](repeating: 0, count: 256)
        while true {
            lock.lock()
            let stop = stopped
            var started: [(ClientRequest, @Sendable (Result<ClientResponse, HTTPClientError>) -> Void)] = []
            if !stop {
                while active.count + started.count < limit.slots, !queue.isEmpty { started.append(queue.removeFirst()) }
            }
            let abandoned = stop ? queue : []
            if stop { queue.removeAll() }
            lock.unlock()
            if stop {
                for (_, completion) in abandoned { completion(.failure(.transport("client shut down"))) }
                for (handle, (_, completion, _)) in active {
                    curl_multi_remove_handle(multi, handle)
                    completion(.failure(.transport("client shut down")))
                }
                active.removeAll()
                break
            }
            for (request, completion) in started {
                do {
                    let t = try CurlTransfer(request)
                    active[t.handle] = (t, completion, ContinuousClock.now)
                    curl_multi_add_handle(multi, t.handle) // sets a timeout of 0: the transfer starts below
                } catch {
                    completion(.failure(error))
                }
            }
            lock.lock(); inFlight = active.count; lock.unlock()
            // Wait for a socket libcurl named, its timer, or a wake-up; at most a second.
            var timeout: Int32 = 1000
            if let deadline = curlDeadline {
                let left = deadline - .now
                timeout = left <= .zero ? 0 : Int32(min(1000, max(1, (left / .milliseconds(1)).rounded(.up))))
            }
            let n = qg_epoll_wait(epoll, &fds, &bits, Int32(fds.count), timeout)
            for i in 0..<max(0, Int(n)) {
                if fds[i] == wake {
                    var count: UInt64 = 0
                    _ = read(wake, &count, 8)
                    continue
                }
                curl_multi_socket_action(multi, fds[i], bits[i], &running)
            }
            if let deadline = curlDeadline, deadline <= .now {
                curlDeadline = nil
                curl_multi_socket_action(multi, curl_socket_t(CURL_SOCKET_TIMEOUT), 0, &running)
            }
            var left: Int32 = 0
            while let msg = curl_multi_info_read(multi, &left) {
                guard msg.pointee.msg == CURLMSG_DONE, let handle = msg.pointee.easy_handle,
                      let (transfer, completion, started) = active[handle] else { continue }
                let code = msg.pointee.data.result
                let result = transfer.result(rawCode: code.rawValue)
                let elapsed = ContinuousClock.now - started
                lock.lock()
                let saturated = active.count >= limit.slots
                limit.record(seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18,
                             overloaded: Self.isOverload(result), saturated: saturated)
                lock.unlock()
                active[handle] = nil
                curl_multi_remove_handle(multi, handle)
                completion(result)
            }
            lock.lock(); inFlight = active.count; lock.unlock()
        }
        done.signal()
    }
}
