// swift-tools-version:6.1
import PackageDescription

// Release builds skip runtime exclusivity checks: the hot path has no shared
// mutable state outside locks, and the checks cost measurable time per request.
let releaseSettings: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "crebitos",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "crebitos", targets: ["Crebitos"]),
        // For the Benchmarks/ package (a package of its own, so that the server binary
        // and CI's build do not carry the benchmark tooling): the layers it measures.
        .library(name: "CrebitosLedger", targets: ["CrebitosLedger"]),
        .library(name: "CrebitosStore", targets: ["CrebitosStore"]),
        .library(name: "CrebitosHTTP", targets: ["CrebitosHTTP"]),
    ],
    // The PostgreSQL store is a trait, on by default so that `swift build` and `swift test`
    // build everything. The SQLite stack (scripts/stack-up) and its image build the server
    // with `--disable-default-traits --product crebitos`: no postgres-nio, no swift-nio-ssl
    // and its BoringSSL, which were most of a first build's time (docs/STACK.md).
    traits: [
        .trait(name: "PostgreSQL", description: "The PostgreSQL store (--database postgres://...), built on postgres-nio"),
        .default(enabledTraits: ["PostgreSQL"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // The domain: what a transaction request is, the rules it must obey,
        // what a statement holds. No HTTP, no SQL.
        .target(
            name: "CrebitosLedger",
            swiftSettings: releaseSettings
        ),
        // The SQLite store: schema, start-up, the cross-process write path.
        // The only layer that knows SQL.
        .target(
            name: "CrebitosStore",
            dependencies: [
                "CrebitosLedger",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: releaseSettings
        ),
        // The PostgreSQL store: the same ledger on a PostgreSQL server (postgres-nio, no
        // ORM), for more than one host. The only other layer that knows SQL.
        .target(
            name: "CrebitosPostgres",
            dependencies: [
                "CrebitosLedger",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: releaseSettings
        ),
        // The HTTP layer: a SwiftNIO HTTP/1.1 server, routes, request decoding, JSON
        // responses, error mapping. The only layer that knows status codes.
        .target(
            name: "CrebitosHTTP",
            dependencies: [
                "CrebitosLedger",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: releaseSettings
        ),
        // Wiring: settings, opening the store, metrics, building the application.
        // A library so that tests build exactly the application the server runs.
        .target(
            name: "CrebitosApp",
            dependencies: [
                "CrebitosLedger",
                "CrebitosStore",
                .target(name: "CrebitosPostgres", condition: .when(traits: ["PostgreSQL"])),
                "CrebitosHTTP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: releaseSettings
        ),
        // glibc's mallopt, which Swift's Glibc module does not export (malloc.h).
        .target(name: "CMallocTuning"),
        // The server executable: command-line and environment parsing, then run.
        .executableTarget(
            name: "Crebitos",
            dependencies: [
                "CrebitosApp",
                "CMallocTuning",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: releaseSettings
        ),
        // For the tests: a throwaway PostgreSQL server (Debian's binaries, initdb in a
        // temporary directory as the unprivileged `postgres` user) when
        // CREBITOS_TEST_POSTGRES_URL does not name one, and a fresh database per test.
        .target(
            name: "CrebitosTestSupport",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            path: "Tests/CrebitosTestSupport"
        ),
        .testTarget(
            name: "CrebitosLedgerTests",
            dependencies: ["CrebitosLedger"]
        ),
        .testTarget(
            name: "CrebitosStoreTests",
            dependencies: [
                "CrebitosLedger",
                "CrebitosStore",
                "CrebitosPostgres",
                "CrebitosTestSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "CrebitosHTTPTests",
            dependencies: [
                "CrebitosApp",
                "CrebitosHTTP",
                "CrebitosLedger",
                "CrebitosStore",
                "CrebitosPostgres",
                "CrebitosTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // Starts real server processes (the built `crebitos` binary) on one file.
        .testTarget(
            name: "CrebitosProcessTests",
            dependencies: [
                "CrebitosStore",
                "CrebitosPostgres",
                "CrebitosTestSupport",
                "CrebitosLedger",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
    ]
)
