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
    /// The peer sent a message since our last WRITEABLE turn. lws answers pings at that turn, so a reply
    /// written at once could overtake the pong of a ping that came before the message it answers
    /// (Autobahn 5.7, 5.19): until the turn, frames queue. (A ping alone sets nothing: lws keeps control
    /// frames to itself, and a pushed frame going before a pong is allowed by RFC 6455.)
    var readSinceWriteable = true
    /// No frame is written at once: the peer started the close handshake (lws echoes it at the next
    /// WRITEABLE turn, and a data frame must not go after the peer's close), or a write failed.
    var noDirectWrites = false
    var closeReason = ""
    /// When (lws_now_usecs) the peer was last heard from: the handshake, any message or fragment, a pong.
    var lastHeard: Int64 = 0
    /// A keep-alive ping is owed at the next WRITEABLE turn / has been sent and not answered yet.
    var pingDue = false
    var pingOutstanding = false
    /// When the ping went out (lws_now_usecs; 0: none yet): a peer has a whole interval from then to answer.
    var pingSentAt: Int64 = 0

    init(id: ConnectionID, wsi: OpaquePointer) { self.id = id; self.wsi = wsi }
}
