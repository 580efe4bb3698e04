import QRGateCore

/// One connection as the loop knows it: an HTTP exchange in progress or a WebSocket peer with its
/// reassembly buffer and outbox. Service thread only (owned by `LWSServer.connections`).
final class LWSConnection {
    let id: ConnectionID
    let wsi: OpaquePointer
    var isWebSocket = false
    // HTTP
    var request: HTTPRequest?
    var pendingBody: [UInt8] = []
    var bodyOffset = 0
    var bodyTooLarge = false
    /// Dispatch waits for LWS_CALLBACK_HTTP_BODY_COMPLETION.
    var awaitingBody = false
    /// Body completions lws reported for the current request (one is normal).
    var completions = 0
    var responding = false
    // WebSocket
    var rx: [UInt8] = []
    var rxOversize = false
    var outbox = Outbox<WireFrame>()
    /// Since when (monotonic µs) the outbox has held more than `outboxBytes`; 0 when it does not.
    var overSince: Int64 = 0
    var closeCode: Int32 = 0
    var closeReason = ""

    init(id: ConnectionID, wsi: OpaquePointer) { self.id = id; self.wsi = wsi }
}
