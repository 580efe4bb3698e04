private import CCurl
import Foundation

/// libcurl's multi interface on its own thread: many transfers at once, at most `limit.slots` in flight
/// (fixed at `maxConcurrent`, or adapted to the upstream's answers up to it: `AdaptiveLimit`), each with
/// its own deadline, so one slow peer never holds up the others.
///
/// `@unchecked Sendable`: a thin wrapper of the multi handle, which only its thread touches; the queue,
/// the in-flight count and the limit are guarded by `lock`.
public final class CurlMulti: @unchecked Sendable {
    public let maxConcurrent: Int
    private var limit: AdaptiveLimit
    private let lock = NSLock()
    private var queue: [(ClientRequest, @Sendable (Result<ClientResponse, HTTPClientError>) -> Void)] = []
    private var stopped = false
    // Owned by the multi thread.
    private let multi: UnsafeMutableRawPointer
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
        let t = Thread { [self] in run() }
        t.name = "qrgate-curl"
        thread = t
        t.start()
    }

    deinit { curl_multi_cleanup(multi) }

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
        curl_multi_wakeup(multi)
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
        curl_multi_wakeup(multi)
        done.wait()
    }

    private func run() {
        var running: Int32 = 0
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
                    curl_multi_add_handle(multi, t.handle)
                } catch {
                    completion(.failure(error))
                }
            }
            lock.lock(); inFlight = active.count; lock.unlock()
            curl_multi_perform(multi, &running)
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
            lock.lock(); inFlight = active.count; let more = !queue.isEmpty && active.count < limit.slots; lock.unlock()
            if !more { curl_multi_poll(multi, nil, 0, 1000, nil) }
        }
        done.signal()
    }
}
