import ArgumentParser

@main
struct QRGateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qrgate",
        abstract: "Real-time QR-linking gateway: keeps WhatsApp linking QR codes fresh and pushes them over WebSocket.",
        subcommands: [Serve.self, Simulate.self, Sessions.self, Cycles.self],
        defaultSubcommand: Serve.self
    )
}
