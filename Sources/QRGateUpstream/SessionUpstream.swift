import QRGateCore

/// The upstream calls the session runtime makes: Evolution API through libcurl in production, a
/// scripted fake in tests that drive the runtime without sockets.
public protocol SessionUpstream: Sendable {
    /// Where it is (`/readyz` probes it).
    var baseURL: String { get }
    /// `number`: digits of the phone to link by pairing code (Evolution's `?number=`); the answer then
    /// carries a `pairingCode` beside the QR.
    func connect(_ instance: String, instanceToken: String?, number: String?) async -> Result<ConnectResult, UpstreamError>
    func connectionState(_ instance: String, instanceToken: String?) async -> Result<UpstreamLinkState, UpstreamError>
    func logout(_ instance: String, instanceToken: String?) async -> Result<Void, UpstreamError>
    func createInstance(_ instance: String) async -> Result<CreatedInstance, UpstreamError>
}

extension EvolutionClient: SessionUpstream {}
