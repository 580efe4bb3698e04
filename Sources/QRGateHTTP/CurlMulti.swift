private import CCurl
import Foundation

/// libcurl's multi interface on its own thread: many transfers at once, at most `maxConcurrent`
/// in flight, each with its own deadline, so one slow peer never holds up the others.
public final class CurlMulti: @unchecked Sendable {
    public let maxConcurrent: Int
    private let lock = NSLock()
    private var queue: [(ClientRequest, @Sendable (Result<ClientResponse, HTTPClientError>) -> Void)] = []
    private var stopped = false
    // Owned by the multi thread.
    private let multi: UnsafeMutableRawPointer
    private var active: [UnsafeMutableRawPointer: (CurlTransfer, @Sendable (Result<ClientResponse, HTTPClientError>) -> Void)] = [:]
    private var thread: Thread?
    private let done = DispatchSemaphore(value: 0)

    public init(maxConcurrent: Int) {
        self.maxConcurrent = max(1, maxConcurrent)
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
                while active.count + started.count < maxConcurrent, !queue.isEmpty { started.append(queue.removeFirst()) }
            }
            let abandoned = stop ? queue : []
            if stop { queue.removeAll() }
            lock.unlock()
            if stop {
                for (_, completion) in abandoned { completion(.failure(.transport("client shut down"))) }
                for (handle, (_, completion)) in active {
                    curl_multi_remove_handle(multi, handle)
                    completion(.failure(.transport("client shut down")))
                }
                active.removeAll()
                break
            }
            for (request, completion) in started {
                do {
                    let t = try CurlTransfer(request)
                    active[t.handle] = (t, completion)
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
                      let (transfer, completion) = active.removeValue(forKey: handle) else { continue }
                let code = msg.pointee.data.result
                curl_multi_remove_handle(multi, handle)
                completion(transfer.result(rawCode: code.rawValue))
            }
            lock.lock(); inFlight = active.count; let more = !queue.isEmpty && active.count < maxConcurrent; lock.unlock()
            if !more { curl_multi_poll(multi, nil, 0, 1000, nil) }
        }
        done.signal()
    }
}
