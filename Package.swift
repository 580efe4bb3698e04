// swift-tools-version:6.0
import PackageDescription

/// Nonisolated async functions run on their caller's executor: an upstream call made from a loop's
/// actor starts and resumes on that loop, with no hop through the global pool.
let loopSettings: [SwiftSetting] = [.enableUpcomingFeature("NonisolatedNonsendingByDefault")]

let package = Package(
    name: "QRGate",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "qrgate", targets: ["qrgate"]),
        .executable(name: "qrgate-bench", targets: ["qrgate-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.1.0"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.7.1"),
        .package(url: "https://github.com/swift-extras/swift-extras-base64", from: "1.2.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        // C libraries, wrapped once each (module.modulemap + prefixed shim.h).
        .systemLibrary(name: "CWebSockets", pkgConfig: "libwebsockets",
                       providers: [.apt(["libwebsockets-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl",
                       providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CQREncode", pkgConfig: "libqrencode",
                       providers: [.apt(["libqrencode-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"])]),

        .target(name: "QRGateCore", dependencies: [
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "QRGateQR", dependencies: ["QRGateCore", "CQREncode", "CPNG"]),
        .target(name: "QRGateHTTP", dependencies: ["CCurl"]),
        .target(name: "QRGateUpstream", dependencies: ["QRGateCore", "QRGateHTTP", "QRGateQR",
                                                     .product(name: "DequeModule", package: "swift-collections")]),
        .target(name: "QRGateStore", dependencies: [
            "QRGateCore",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // PostgreSQL through PostgresNIO, in its own target: its NIO names stay out of the server's code.
        .target(name: "QRGatePostgres", dependencies: [
            "QRGateCore", "QRGateStore",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "QRGateServer", dependencies: [
            "QRGateStore", "QRGatePostgres",
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            "CWebSockets", "QRGateCore", "QRGateQR", "QRGateUpstream", "QRGateHTTP",
            .product(name: "HeapModule", package: "swift-collections"),
            .product(name: "DequeModule", package: "swift-collections"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "JWTKit", package: "jwt-kit"),
            .product(name: "ExtrasBase64", package: "swift-extras-base64"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "qrgate", dependencies: [
            "QRGateCore", "QRGateServer", "QRGateStore", "QRGatePostgres",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        .executableTarget(name: "qrgate-bench", dependencies: [
            "CWebSockets", "QRGateHTTP",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // zbarimg-based decoding shared by the test targets.
        .target(name: "QRGateTestSupport"),

        .testTarget(name: "QRGateCoreTests", dependencies: ["QRGateCore"]),
        .testTarget(name: "QRGateQRTests", dependencies: ["QRGateQR", "QRGateCore", "QRGateTestSupport"]),
        .testTarget(name: "QRGateUpstreamTests", dependencies: ["QRGateUpstream", "QRGateServer", "QRGateHTTP", "QRGateCore", "QRGateQR", "QRGateTestSupport"]),
        .testTarget(name: "QRGateStoreTests", dependencies: ["QRGateStore", "QRGatePostgres", "QRGateCore"]),
        .testTarget(name: "QRGateServerTests", dependencies: ["QRGateServer", "QRGateHTTP", "QRGateCore", "QRGateQR", "QRGateUpstream", "QRGateTestSupport",
                                                          .product(name: "JWTKit", package: "jwt-kit")]),
    ]
)

// Every module compiles with the same rule, so callers and callees agree on where async code runs.
for target in package.targets where target.type != .system {
    target.swiftSettings = (target.swiftSettings ?? []) + loopSettings
}
