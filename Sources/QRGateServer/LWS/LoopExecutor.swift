internal import CWebSockets
import Foundation
import Synchronization

/// A libwebsockets service thread as a Swift `SerialExecutor` (the pattern swift-nio uses for its
/// event loops): `enqueue` appends the job and wakes the loop with `lws_cancel_service`; the loop runs
/// the jobs in `LWS_CALLBACK_EVENT_WAIT_CANCELLED`. Actors whose `unownedExecutor` is this executor run
/// on the loop thread, so `await` on them is a checked hop onto the loop.
///
/// Besides Swift jobs it runs plain calls (`post`) in the same FIFO order: how another loop hands this
/// one a frame to deliver, or how a loop hands the gateway's loop what its peers said, in order.
///
/// Jobs of priority `.high` and above go ahead of that queue (as Dispatch honours QoS): they run before
/// the next queued item, even in the middle of a batch, FIFO among themselves. That is the store's answer
/// (`SessionRuntime.persist`): durable events wait for it before anyone sees them, and behind a batch of
/// a thousand webhooks and frames it waited 40–140 ms on a busy loop (a 10 000-session fleet's p99 of
/// `qr_generated` delivery: 107–134 ms in FIFO order, 23–41 ms with this lane; Benchmarks/results/NOTES.md).
///
/// `@unchecked Sendable`: the queue, the context it wakes and the loop thread's identity are all
/// guarded by `lock`.
public final class LoopExecutor: SerialExecutor, TaskExecutor, @unchecked Sendable {
    private enum Work {
        case job(UnownedJob)
        case call(@Sendable () -> Void)
    }
    private let lock = NSLock()
    private var jobs: [Work] = []
    /// Jobs of priority `.high` or more, run before the next item of `jobs`.
    private var urgent: [UnownedJob] = []
    /// `urgent.count`, readable between two items without taking the lock.
    private let urgentCount = Atomic<Int>(0)
    /// The context to wake; nil before the loop runs and after it ended.
    private var context: OpaquePointer?
    private var loopThread: pthread_t?

    init() {}

    public func enqueue(_ job: consuming ExecutorJob) {
        if job.priority.rawValue >= Self.urgentPriority {
            lock.lock()
            let wasEmpty = jobs.isEmpty && urgent.isEmpty
            urgent.append(UnownedJob(job))
            urgentCount.add(1, ordering: .releasing)
            if wasEmpty, let context { lws_cancel_service(context) }
            lock.unlock()
        } else {
            add(.job(UnownedJob(job)))
        }
    }

    private static let urgentPriority = JobPriority(TaskPriority.high).rawValue

    /// Runs `call` on the loop thread after everything queued before it. Calls posted after the loop
    /// ended are dropped (their connections are gone).
    public func post(_ call: @escaping @Sendable () -> Void) {
        add(.call(call))
    }

    private func add(_ work: Work) {
        // Woken under the lock, so `detach()` guarantees no wake reaches a destroyed context. One wake is
        // enough for a batch: the loop takes the whole queue at once.
        lock.lock()
        let wasEmpty = jobs.isEmpty && urgent.isEmpty
        jobs.append(work)
        if wasEmpty, let context { lws_cancel_service(context) } // the one lws call other threads may make
        lock.unlock()
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor { UnownedSerialExecutor(ordinary: self) }
    /// Also a task executor: `Task(executorPreference:)` starts work on the loop without a hop through
    /// the global pool (which a caller blocked in a synchronous start may be holding).
    public func asUnownedTaskExecutor() -> UnownedTaskExecutor { UnownedTaskExecutor(ordinary: self) }

    /// Traps unless called on the loop thread (what `assumeIsolated` relies on in C callbacks).
    public func checkIsolated() {
        precondition(isLoopThread, "not on this libwebsockets loop's thread")
    }

    var isLoopThread: Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let t = loopThread else { return false }
        return pthread_equal(t, pthread_self()) != 0
    }

    /// Called by the loop thread once its context exists: from now on `enqueue` wakes it, and jobs
    /// queued before are run at the first wake-up.
    func attach(_ context: OpaquePointer) {
        lock.lock()
        loopThread = pthread_self()
        self.context = context
        lws_cancel_service(context)
        lock.unlock()
    }

    /// Called by the loop thread before it destroys the context: later jobs wake nobody.
    func detach() {
        lock.lock()
        context = nil
        lock.unlock()
    }

    /// Runs every job queued so far, the urgent ones first (on the loop thread).
    func runQueued() {
        lock.lock()
        let batch = jobs
        jobs.removeAll(keepingCapacity: true)
        lock.unlock()
        let serial = asUnownedSerialExecutor(), task = asUnownedTaskExecutor()
        runUrgent(serial, task)
        for work in batch {
            if urgentCount.load(ordering: .acquiring) > 0 { runUrgent(serial, task) }
            switch work {
            case let .job(job): job.runSynchronously(isolatedTo: serial, taskExecutor: task)
            case let .call(call): call()
            }
        }
    }

    /// Runs the urgent jobs, and those they make urgent in turn, until none is left (on the loop thread).
    private func runUrgent(_ serial: UnownedSerialExecutor, _ task: UnownedTaskExecutor) {
        while urgentCount.load(ordering: .acquiring) > 0 {
            lock.lock()
            let batch = urgent
            urgent.removeAll(keepingCapacity: true)
            urgentCount.store(0, ordering: .releasing)
            lock.unlock()
            for job in batch { job.runSynchronously(isolatedTo: serial, taskExecutor: task) }
        }
    }
}
